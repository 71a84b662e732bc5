//! Step 1: a UTS namespace. The container has its own hostname; the host's
//! is untouched; COMMAND's exit code is the step's.

use berth_tests::{
    host, privileged, run, snapshot_settings, step_binary, world_executable,
};

#[test]
fn the_container_has_its_own_hostname() {
    if !privileged("step01_uts::the_container_has_its_own_hostname") {
        return;
    }
    let (step, probe) = (step_binary("step01-uts"), step_binary("probe"));
    let before = host::State::now();
    let shown = run(
        &step,
        &["--hostname", "box", "--", &probe, "hostname", "ns"],
    );
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert!(
        shown.stdout.contains("hostname: box\n"),
        "{}",
        shown.render()
    );
    // Only the UTS namespace is new at this step.
    assert!(shown.stdout.contains(" uts=new"), "{}", shown.render());
    assert!(shown.stdout.contains(" pid=host"), "{}", shown.render());
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step01_hostname", shown.render()));
}

#[test]
fn without_hostname_the_container_keeps_a_copy_of_the_hosts() {
    if !privileged(
        "step01_uts::without_hostname_the_container_keeps_a_copy_of_the_hosts",
    ) {
        return;
    }
    let (step, probe) = (step_binary("step01-uts"), step_binary("probe"));
    let shown = run(&step, &["--", &probe, "hostname"]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(shown.stdout, format!("hostname: {}\n", host::hostname()));
}

#[test]
fn exit_codes_and_errors_reach_the_caller() {
    if !privileged("step01_uts::exit_codes_and_errors_reach_the_caller") {
        return;
    }
    let step = step_binary("step01-uts");
    let before = host::State::now();
    let runs = [
        run(&step, &["--", "sh", "-c", "exit 3"]),
        run(&step, &["--", "sh", "-c", "kill -TERM $$"]),
        run(&step, &["--", "no-such-command"]),
        run(&step, &["--", "/etc/passwd"]),
        run(&step, &["--hostname", "my box", "--", "true"]),
    ];
    before.assert_unchanged();
    let codes: Vec<i32> = runs.iter().map(|r| r.code).collect();
    assert_eq!(codes, [3, 143, 127, 126, 2]);
    let text: String = runs.iter().map(|r| r.render() + "\n").collect();
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step01_exit_codes", text));
}

/// An ordinary user may not create a UTS namespace (step 5 shows how a user
/// namespace changes that): a clear error, exit code 125.
#[test]
fn an_ordinary_user_gets_a_clear_error() {
    if !privileged("step01_uts::an_ordinary_user_gets_a_clear_error") {
        return;
    }
    let step = world_executable("step01-uts");
    // setpriv(1) drops to nobody; being root is needed to do that.
    let shown = run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &step,
            "--hostname",
            "box",
            "--",
            "true",
        ],
    );
    assert_eq!(shown.code, 125, "{}", shown.render());
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("step01_unprivileged", shown.render())
    });
}

/// Nothing the caller leaves open or ignored reaches the container: here
/// fd 7 is open on the host's `/` and SIGPIPE is ignored (Rust's runtime
/// ignores it in every Rust program too, the step included). The container
/// gets stdio only, and every signal with its default disposition.
#[test]
fn only_stdio_and_default_signals_cross_into_the_container() {
    if !privileged(
        "step01_uts::only_stdio_and_default_signals_cross_into_the_container",
    ) {
        return;
    }
    let (step, probe) = (step_binary("step01-uts"), step_binary("probe"));
    let line =
        format!("trap \"\" PIPE; exec {step} -- {probe} fds signals 7</");
    let shown = run("sh", &["-c", &line]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(
        shown.stdout,
        "fds: 0 1 2\nSigBlk: 0000000000000000\nSigIgn: 0000000000000000\n"
    );
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step01_fds_signals", shown.render()));
}
