//! berth-runtime's lifecycle as a client sees it: runc's commands, one
//! process each, with the container's state kept under `--root` between
//! them. The status is observed, the commands refuse what the status does
//! not allow, and nothing is left behind — not even by a `create` killed
//! halfway.

mod oci;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{Transcript, privileged, snapshot_settings, step_binary};
use oci::{assert_cgroup_removed, bundle, fresh_root, state, wait_for};
use serde_json::{Value, json};

/// A bundle whose process runs `script` with busybox's `sh`.
fn sh_bundle(
    name: &str,
    script: &str,
    edit: impl FnOnce(&mut Value),
) -> String {
    bundle(name, |c| {
        c["process"]["args"] = json!(["sh", "-c", script]);
        edit(c)
    })
}

/// Run `berth-runtime --root ROOT args...` to its end, its stdout and
/// stderr in files (the container process inherits them, as under runc).
fn runtime(root: &str, args: &[&str]) -> Transcript {
    with_root(&step_binary("berth-runtime"), root, args)
}

/// Settings for a lifecycle transcript: pids, times and the checkout's
/// absolute path vary.
fn settings() -> insta::Settings {
    let mut settings = snapshot_settings();
    settings.add_filter(r#""pid": [1-9][0-9]*"#, r#""pid": [PID]"#);
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", "[TIME]");
    let here = fs::canonicalize(".").unwrap().display().to_string();
    settings.add_filter(&regex_escape(&here), "[CHECKOUT]");
    // The creator's user name: "root" where /etc/passwd says so.
    settings.add_filter(r#""owner": "[^"]*""#, r#""owner": "[OWNER]""#);
    settings.add_filter(r"(?m)(\[TIME\] +)\S+$", "${1}[OWNER]");
    // list's table: its columns are as wide as the paths in them.
    settings.add_filter(r"(?m)^(\S+) +[1-9][0-9]* ", "$1 [PID] ");
    settings.add_filter(r"(\S) {2,}", "$1 ");
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Every command's transcript, one after the other.
fn transcript(steps: &[Transcript]) -> String {
    steps.iter().map(Transcript::render).collect()
}

#[test]
fn create_start_kill_delete_with_the_status_observed_at_each_step() {
    if !privileged("runtime_lifecycle::create_start_kill_delete") {
        return;
    }
    let root = fresh_root("lifecycle");
    let dir = sh_bundle("runtime-lifecycle", "sleep 1000", |_| {});
    let mut steps = vec![runtime(&root, &["create", "--bundle", &dir, "c1"])];
    steps.push(runtime(&root, &["state", "c1"]));
    steps.push(runtime(&root, &["list"]));
    steps.push(runtime(&root, &["start", "c1"]));
    steps.push(runtime(&root, &["state", "c1"]));
    steps.push(runtime(&root, &["kill", "c1", "KILL"]));
    wait_for(&root, "c1", "stopped");
    steps.push(runtime(&root, &["state", "c1"]));
    steps.push(runtime(&root, &["kill", "c1"]));
    steps.push(runtime(&root, &["delete", "c1"]));
    steps.push(runtime(&root, &["state", "c1"]));
    steps.push(runtime(&root, &["list", "--format", "json"]));
    assert_cgroup_removed("runtime-lifecycle");
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "{root} not empty");
    settings().bind(|| {
        insta::assert_snapshot!("runtime_lifecycle", transcript(&steps))
    });
}

#[test]
fn the_state_directory_is_closed_to_others_and_the_fifo_marks_created() {
    if !privileged("runtime_lifecycle::state_directory_modes") {
        return;
    }
    let root = fresh_root("modes");
    let dir = sh_bundle("runtime-modes", "sleep 1000", |_| {});
    let created = runtime(&root, &["create", "--bundle", &dir, "m1"]);
    assert_eq!(created.code, 0, "{}", created.render());
    let mode = |path: &str| {
        let meta = fs::symlink_metadata(Path::new(&root).join(path)).unwrap();
        format!("{path} {:o}", meta.permissions().mode() & 0o7777)
    };
    let modes = ["", "m1", "m1/state.json", "m1/config.json", "m1/exec.fifo"]
        .map(mode)
        .join("\n");
    assert_eq!(
        modes,
        " 700\nm1 711\nm1/state.json 600\nm1/config.json 600\nm1/exec.fifo 622"
    );
    let fifo = Path::new(&root).join("m1/exec.fifo");
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    let started = runtime(&root, &["start", "m1"]);
    assert_eq!(started.code, 0, "{}", started.render());
    assert!(!fifo.exists(), "start must remove the exec fifo");
    assert_eq!(state(&root, "m1")["status"], "running");
    let deleted = runtime(&root, &["delete", "--force", "m1"]);
    assert_eq!(deleted.code, 0, "{}", deleted.render());
}

/// The recorded process of `id`.
fn recorded_pid(root: &str, id: &str) -> i32 {
    let text = fs::read_to_string(format!("{root}/{id}/state.json")).unwrap();
    let record: Value = serde_json::from_str(&text).unwrap();
    record["process"]["pid"].as_i64().unwrap() as i32
}

#[test]
fn a_process_killed_from_outside_or_a_reused_pid_reads_stopped() {
    if !privileged("runtime_lifecycle::status_is_observed") {
        return;
    }
    let root = fresh_root("observed");
    let dir = sh_bundle("runtime-observed", "sleep 1000", |_| {});
    for id in ["o1", "o2"] {
        let run = runtime(&root, &["run", "--detach", "--bundle", &dir, id]);
        assert_eq!(run.code, 0, "{}", run.render());
        assert_eq!(state(&root, id)["status"], "running");
        // Only one container may use the bundle's cgroup path at a time.
        if id == "o1" {
            // Killed behind the runtime's back: nothing recorded changes.
            let pid = recorded_pid(&root, id);
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            wait_for(&root, id, "stopped");
            assert_eq!(state(&root, id)["pid"], 0);
        } else {
            // The same pid, but another process: its start time differs.
            let path = format!("{root}/{id}/state.json");
            let mut record: Value =
                serde_json::from_str(&fs::read_to_string(&path).unwrap())
                    .unwrap();
            let start = record["process"]["start_time"].as_u64().unwrap();
            record["process"]["start_time"] = json!(start + 1);
            fs::write(&path, record.to_string()).unwrap();
            assert_eq!(state(&root, id)["status"], "stopped");
            // And so kill refuses it: the signal would hit a stranger.
            let kill = runtime(&root, &["kill", id, "KILL"]);
            assert_ne!(kill.code, 0, "{}", kill.render());
            // The real process is still there; put the record back.
            record["process"]["start_time"] = json!(start);
            fs::write(&path, record.to_string()).unwrap();
            assert_eq!(state(&root, id)["status"], "running");
        }
        let deleted = runtime(&root, &["delete", "--force", id]);
        assert_eq!(deleted.code, 0, "{}", deleted.render());
    }
    assert_cgroup_removed("runtime-observed");
}

#[test]
fn commands_the_status_does_not_allow_fail_with_one_line() {
    if !privileged("runtime_lifecycle::refusals") {
        return;
    }
    let root = fresh_root("refusals");
    let dir = sh_bundle("runtime-refusals", "sleep 1000", |_| {});
    let long = "a".repeat(256);
    let steps = vec![
        runtime(&root, &["create", "--bundle", &dir, "../escape"]),
        runtime(&root, &["create", "--bundle", &dir, ".hidden"]),
        runtime(&root, &["create", "--bundle", &dir, &long]),
        runtime(&root, &["state", "nothing-here"]),
        runtime(&root, &["create", "--bundle", &dir, "r1"]),
        runtime(&root, &["create", "--bundle", &dir, "r1"]),
        runtime(&root, &["pause", "r1"]),
        runtime(&root, &["start", "r1"]),
        runtime(&root, &["start", "r1"]),
        runtime(&root, &["kill", "r1", "SIGNOPE"]),
        runtime(&root, &["delete", "r1"]),
        runtime(&root, &["pause", "r1"]),
        runtime(&root, &["state", "r1"]),
        runtime(&root, &["resume", "r1"]),
        runtime(&root, &["kill", "r1", "9"]),
    ];
    wait_for(&root, "r1", "stopped");
    let mut steps = steps;
    steps.push(runtime(&root, &["resume", "r1"]));
    steps.push(runtime(&root, &["delete", "r1"]));
    steps.push(runtime(
        &root,
        &["--systemd-cgroup", "create", "--bundle", &dir, "r2"],
    ));
    assert!(!Path::new(&root).join("r2").exists());
    assert_cgroup_removed("runtime-refusals");
    let mut settings = settings();
    settings.add_filter(&long, "[256 x a]");
    settings.bind(|| {
        insta::assert_snapshot!("runtime_refusals", transcript(&steps))
    });
}

#[test]
fn run_in_the_foreground_returns_the_exit_code_and_leaves_nothing() {
    if !privileged("runtime_lifecycle::run_foreground") {
        return;
    }
    let root = fresh_root("foreground");
    let dir = sh_bundle("runtime-foreground", "echo hello; exit 3", |_| {});
    let pid_file = format!("{root}.pid");
    let run = runtime(
        &root,
        &["run", "--pid-file", &pid_file, "--bundle", &dir, "f1"],
    );
    assert_eq!(run.code, 3, "{}", run.render());
    assert_eq!(run.stdout, "hello\n");
    assert!(
        fs::read_to_string(&pid_file)
            .unwrap()
            .parse::<i32>()
            .is_ok()
    );
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "{root} not empty");
    assert_cgroup_removed("runtime-foreground");
}

#[test]
fn hooks_run_in_the_commands_of_their_stages() {
    if !privileged("runtime_lifecycle::hooks") {
        return;
    }
    let root = fresh_root("hooks");
    let log = fs::canonicalize("target")
        .unwrap()
        .join("test-runtime/hooks.log");
    let _ = fs::remove_file(&log);
    // Each hook appends its stage, the command that ran it (our parent's
    // command line) and the status it was given.
    let hook = |stage: &str| {
        let line = format!(
            "printf '%s %s %s\\n' {stage} \"$(tr '\\0' ' ' </proc/$PPID/cmdline \
             | sed 's/.*--root [^ ]* \\([a-z]*\\).*/\\1/')\" \
             \"$(sed 's/.*\"status\":\"\\([a-z]*\\)\".*/\\1/')\" >> {}",
            log.display()
        );
        json!({"path": "/bin/sh", "args": ["sh", "-c", line]})
    };
    let dir = sh_bundle("runtime-hooks", "sleep 1000", |c| {
        c["hooks"] = json!({
            "createRuntime": [hook("createRuntime")],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
    });
    for args in [
        vec!["create", "--bundle", &dir, "h1"],
        vec!["start", "h1"],
        vec!["kill", "h1", "KILL"],
    ] {
        let done = runtime(&root, &args);
        assert_eq!(done.code, 0, "{}", done.render());
    }
    wait_for(&root, "h1", "stopped");
    let deleted = runtime(&root, &["delete", "h1"]);
    assert_eq!(deleted.code, 0, "{}", deleted.render());
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "createRuntime create creating\npoststart start running\n\
         poststop delete stopped\n"
    );
}

#[test]
fn pause_and_resume_freeze_and_thaw_the_cgroup() {
    if !privileged("runtime_lifecycle::pause_resume") {
        return;
    }
    let root = fresh_root("pause");
    let dir = sh_bundle("runtime-pause", "sleep 1000", |_| {});
    let run = runtime(&root, &["run", "-d", "--bundle", &dir, "p1"]);
    assert_eq!(run.code, 0, "{}", run.render());
    assert_eq!(runtime(&root, &["pause", "p1"]).code, 0);
    assert_eq!(state(&root, "p1")["status"], "paused");
    assert_eq!(runtime(&root, &["resume", "p1"]).code, 0);
    assert_eq!(state(&root, "p1")["status"], "running");
    // A paused container killed with --force is thawed so that it can die.
    assert_eq!(runtime(&root, &["pause", "p1"]).code, 0);
    let deleted = runtime(&root, &["delete", "--force", "p1"]);
    assert_eq!(deleted.code, 0, "{}", deleted.render());
    assert_cgroup_removed("runtime-pause");
}

#[test]
fn a_create_killed_halfway_leaves_only_what_delete_removes() {
    if !privileged("runtime_lifecycle::create_killed") {
        return;
    }
    let root = fresh_root("killed");
    let marker = fs::canonicalize("target")
        .unwrap()
        .join("test-runtime/killed-hook-ran");
    let _ = fs::remove_file(&marker);
    // createRuntime runs while the process waits at sync 1, in its cgroup.
    let dir = sh_bundle("runtime-killed", "sleep 1000", |c| {
        c["hooks"] = json!({"createRuntime": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo $$ > {}; exec sleep 1000", marker.display())],
        }]});
    });
    let program = step_binary("berth-runtime");
    let mut create = Command::new(&program)
        .args(["--root", &root, "create", "--bundle", &dir, "k1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while fs::read_to_string(&marker).map_or(true, |t| !t.ends_with('\n')) {
        assert!(start.elapsed() < Duration::from_secs(10), "hook never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state(&root, "k1")["status"], "creating");
    create.kill().unwrap();
    create.wait().unwrap();
    assert_eq!(state(&root, "k1")["status"], "stopped");
    let deleted = runtime(&root, &["delete", "k1"]);
    assert_eq!(deleted.code, 0, "{}", deleted.render());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "{root} not empty");
    assert_cgroup_removed("runtime-killed");
    // The hook died with the runtime that ran it.
    let hook = fs::read_to_string(&marker).unwrap().trim().to_owned();
    oci::wait_gone(&hook, "the createRuntime hook");
}

/// `program --root ROOT args...` (runc or ours), stdio to files: a
/// created container holds its creator's stdio.
fn with_root(program: &str, root: &str, args: &[&str]) -> Transcript {
    let mut full = vec!["--root", root];
    full.extend_from_slice(args);
    let out_dir = PathBuf::from(format!("{root}.out"));
    berth_tests::run_to_files(program, &full, &out_dir, |_| {})
}

#[test]
fn state_has_runcs_fields_and_statuses_at_every_step() {
    if !privileged("runtime_lifecycle::state_like_runc") {
        return;
    }
    let ours = step_binary("berth-runtime");
    let dir = sh_bundle("runtime-state-diff", "sleep 1000", |c| {
        c["annotations"] = json!({"org.example.team": "berth"});
        // No cgroup path: each runtime's is its container's id.
        c["linux"]["cgroupsPath"] = Value::Null;
    });
    let both = [
        ("runc", "target/test-runtime/state-diff-runc", "sd1"),
        (ours.as_str(), "target/test-runtime/state-diff-berth", "sd2"),
    ];
    let run_both = |verb: &str, before: &[&str], after: &[&str]| {
        for (program, root, id) in both {
            let mut args = before.to_vec();
            args.push(verb);
            args.extend_from_slice(after);
            args.push(id);
            let done = with_root(program, root, &args);
            assert_eq!(done.code, 0, "{}", done.render());
        }
    };
    let state_of = |index: usize| -> Value {
        let (program, root, id) = both[index];
        let shown = with_root(program, root, &["state", id]);
        assert_eq!(shown.code, 0, "{}", shown.render());
        serde_json::from_str(&shown.stdout).unwrap()
    };
    let keys = |state: &Value| {
        let mut keys: Vec<String> =
            state.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let compare = |status: &str| {
        let (theirs, mine) = (state_of(0), state_of(1));
        assert_eq!(keys(&theirs), keys(&mine));
        for field in ["status", "bundle", "rootfs", "annotations"] {
            assert_eq!(theirs[field], mine[field], "{field} when {status}");
        }
        assert_eq!(mine["status"], status);
        assert_eq!(theirs["pid"] == 0, mine["pid"] == 0, "pid when {status}");
    };
    for (_, root, _) in both {
        let _ = fs::remove_dir_all(root);
    }
    run_both("create", &[], &["--bundle", &dir]);
    compare("created");
    run_both("start", &[], &[]);
    compare("running");
    run_both("pause", &[], &[]);
    compare("paused");
    run_both("resume", &[], &[]);
    for (program, root, id) in both {
        let done = with_root(program, root, &["kill", id, "KILL"]);
        assert_eq!(done.code, 0, "{}", done.render());
    }
    let start = Instant::now();
    while state_of(0)["status"] != "stopped"
        || state_of(1)["status"] != "stopped"
    {
        assert!(start.elapsed() < Duration::from_secs(10), "never stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    compare("stopped");
    run_both("delete", &[], &[]);
}

#[test]
fn what_a_create_killed_before_its_state_leaves_is_deleted() {
    if !privileged("runtime_lifecycle::half_created") {
        return;
    }
    // A create killed between its mkdir and its first state.json: the
    // directory alone, its lock free.
    let root = fresh_root("half-created");
    fs::create_dir_all(format!("{root}/h1")).unwrap();
    let shown = runtime(&root, &["state", "h1"]);
    assert!(
        shown.stderr.contains("does not exist"),
        "{}",
        shown.render()
    );
    let deleted = runtime(&root, &["delete", "h1"]);
    assert_eq!(deleted.code, 0, "{}", deleted.render());
    assert!(!Path::new(&root).join("h1").exists());
}

#[test]
fn kill_all_signals_every_process_of_the_container() {
    if !privileged("runtime_lifecycle::kill_all") {
        return;
    }
    let root = fresh_root("kill-all");
    // No PID namespace of its own, so that the death of the container's
    // process does not take the others with it: only --all reaches them.
    // The shell prints its child's pid (a host pid here) and waits.
    let dir =
        sh_bundle("runtime-kill-all", "sleep 1000 & echo $!; wait", |c| {
            let namespaces = c["linux"]["namespaces"].as_array_mut().unwrap();
            namespaces.retain(|ns| ns["type"] != "pid");
        });
    let run = runtime(&root, &["run", "-d", "--bundle", &dir, "a1"]);
    assert_eq!(run.code, 0, "{}", run.render());
    // The container writes into the file `run` had as stdout.
    let stdout = format!("{root}.out/stdout");
    let start = Instant::now();
    let child = loop {
        let text = fs::read_to_string(&stdout).unwrap_or_default();
        if let Some(pid) =
            text.lines().next().and_then(|l| l.parse::<i32>().ok())
        {
            break pid;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no child pid");
        std::thread::sleep(Duration::from_millis(20));
    };
    let killed = runtime(&root, &["kill", "--all", "a1", "KILL"]);
    assert_eq!(killed.code, 0, "{}", killed.render());
    oci::wait_gone(&child.to_string(), "the container's second process");
    wait_for(&root, "a1", "stopped");
    let deleted = runtime(&root, &["delete", "a1"]);
    assert_eq!(deleted.code, 0, "{}", deleted.render());
    assert_cgroup_removed("runtime-kill-all");
}
