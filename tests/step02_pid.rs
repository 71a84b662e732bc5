//! Step 2: a PID namespace under a minimal init. COMMAND is PID 2 under our
//! init (PID 1); `/proc` is still the host's, which the snapshot shows.

use std::time::Duration;

use berth_tests::{
    host, privileged, run, snapshot_settings, step_binary, test_command,
};

#[test]
fn the_command_runs_under_init_but_proc_is_still_the_hosts() {
    if !privileged(
        "step02_pid::the_command_runs_under_init_but_proc_is_still_the_hosts",
    ) {
        return;
    }
    let (step, probe) = (step_binary("step02-pid"), step_binary("probe"));
    let before = host::State::now();
    let shown = run(
        &step,
        &[
            "--hostname",
            "box",
            "--",
            &probe,
            "hostname",
            "pid",
            "pids",
            "ns",
        ],
    );
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert!(
        shown.stdout.contains("pid: 2\nppid: 1\n"),
        "{}",
        shown.render()
    );
    // The surprise: /proc/self is the probe's pid in the *host's* namespace.
    assert!(
        !shown.stdout.contains("/proc/self: 2\n"),
        "{}",
        shown.render()
    );
    assert!(shown.stdout.contains(" pid=new"), "{}", shown.render());
    let mut settings = snapshot_settings();
    settings.add_filter(r"/proc/self: \d+", "/proc/self: [HOST PID]");
    settings.add_filter(r"pids: \d+ processes", "pids: [MANY] processes");
    settings.bind(|| insta::assert_snapshot!("step02_pid", shown.render()));
}

#[test]
fn exit_codes_and_errors_reach_the_caller() {
    if !privileged("step02_pid::exit_codes_and_errors_reach_the_caller") {
        return;
    }
    let step = step_binary("step02-pid");
    let runs = [
        run(&step, &["--", "sh", "-c", "exit 3"]),
        run(&step, &["--", "sh", "-c", "kill -KILL $$"]),
        run(&step, &["--", "no-such-command"]),
    ];
    let codes: Vec<i32> = runs.iter().map(|r| r.code).collect();
    assert_eq!(codes, [3, 137, 127]);
    let text: String = runs.iter().map(|r| r.render() + "\n").collect();
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step02_exit_codes", text));
}

/// `sleep` as PID 1 would ignore SIGTERM; under our init it gets it.
#[test]
fn sigterm_and_sigint_reach_the_command() {
    if !privileged("step02_pid::sigterm_and_sigint_reach_the_command") {
        return;
    }
    let step = step_binary("step02-pid");
    for (signal, code) in [
        (libc::SIGTERM, 128 + libc::SIGTERM),
        (libc::SIGINT, 128 + libc::SIGINT),
    ] {
        let mut child = test_command(&step, &["--", "sleep", "60"])
            .spawn()
            .expect("cannot start step02-pid");
        // Give it time to start sleep; a signal before that is forwarded too,
        // only to the init's fork instead of to sleep.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on a child we have not reaped yet.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().expect("cannot wait for step02-pid");
        assert_eq!(status.code(), Some(code), "after signal {signal}");
    }
}
