//! Step 5: user and IPC namespaces. Root inside is an unprivileged uid
//! outside; an ordinary user runs the whole container rootless; System V
//! IPC objects on either side are invisible on the other.

use std::os::unix::fs::MetadataExt;

use berth_tests::fixture::{rootfs, rootfs_arg};
use berth_tests::{
    ThrowawayUser, host, host_fs_filter, privileged, run, snapshot_settings,
    step_binary, world_executable, world_readable_rootfs,
};
use nix::unistd::{Gid, Uid};
use step08_oci::user;

#[test]
fn id_map_plans() {
    let options = |maps: &[&str]| user::Options {
        userns: true,
        uid_maps: maps.iter().map(|m| m.parse().unwrap()).collect(),
        gid_maps: vec![],
    };
    let show = |title: &str, options: &user::Options, uid: u32, gid: u32| {
        let plan = user::plan(options, Uid::from_raw(uid), Gid::from_raw(gid));
        match plan {
            Ok(Some(plan)) => format!("{title}:\n{plan}\n"),
            Ok(None) => format!("{title}: no user namespace\n\n"),
            Err(error) => format!("{title}: error: {error}\n\n"),
        }
    };
    let text = [
        show("root, --userns", &options(&[]), 0, 0),
        show(
            "root, --uid-map 0:200000:1000",
            &options(&["0:200000:1000"]),
            0,
            0,
        ),
        show("uid 1000 (gid 100), no options", &options(&[]), 1000, 100),
        show(
            "uid 1000, --uid-map 0:100000:65536",
            &options(&["0:100000:65536"]),
            1000,
            100,
        ),
    ]
    .concat();
    snapshot_settings().bind(|| insta::assert_snapshot!("step05_plans", text));
}

#[test]
fn root_inside_is_an_unprivileged_uid_outside() {
    if !privileged(
        "step05_user_ipc::root_inside_is_an_unprivileged_uid_outside",
    ) {
        return;
    }
    let (step, rootfs_dir) = (step_binary("step05-user-ipc"), rootfs_arg());
    let file = "/tmp/made-by-step05-root";
    let script = format!("probe ids ns; touch {file}");
    let before = host::State::now();
    let shown = run(
        &step,
        &[
            "--rootfs",
            &rootfs_dir,
            "--userns",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    // What the container's root created belongs to uid 100000 on the host.
    let made = rootfs().join(file.trim_start_matches('/'));
    let owner = std::fs::metadata(&made).map(|m| (m.uid(), m.gid()));
    let _ = std::fs::remove_file(&made);
    assert_eq!(owner.unwrap(), (100_000, 100_000));
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step05_userns", shown.render()));
}

#[test]
fn an_ordinary_user_runs_a_rootless_container() {
    if !privileged(
        "step05_user_ipc::an_ordinary_user_runs_a_rootless_container",
    ) {
        return;
    }
    let step = world_executable("step05-user-ipc");
    let rootfs_dir = world_readable_rootfs();
    let user = ThrowawayUser::create("berth-rootless");
    let mut args = user.setpriv();
    args.extend(
        [&step, "--rootfs", rootfs_dir, "--hostname", "box", "--"]
            .map(str::to_owned),
    );
    args.extend(
        ["probe", "hostname", "pid", "pids", "ids", "ns", "mounts"]
            .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = host::State::now();
    let shown = run("setpriv", &args);
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    let uid_map = format!("uid_map: 0 {} 1\n", user.uid);
    assert!(shown.stdout.contains("uid: 0\n"), "{}", shown.render());
    assert!(shown.stdout.contains(&uid_map), "{}", shown.render());
    assert!(shown.stdout.contains("pids: 1 2\n"), "{}", shown.render());
    let mut settings = snapshot_settings();
    settings.add_filter(r"uid_map: 0 \d+ 1", "uid_map: 0 [USER UID] 1");
    settings.add_filter(r"gid_map: 0 \d+ 1", "gid_map: 0 [USER GID] 1");
    host_fs_filter(&mut settings, &["/"]);
    settings
        .bind(|| insta::assert_snapshot!("step05_rootless", shown.render()));
}

#[test]
fn an_ordinary_user_asking_for_a_range_gets_a_clear_error() {
    if !privileged(
        "step05_user_ipc::an_ordinary_user_asking_for_a_range_gets_a_clear_error",
    ) {
        return;
    }
    let step = world_executable("step05-user-ipc");
    let rootfs_dir = world_readable_rootfs();
    let user = ThrowawayUser::create("berth-rootless2");
    let mut args = user.setpriv();
    args.extend(
        [
            &step,
            "--rootfs",
            rootfs_dir,
            "--uid-map",
            "0:100000:65536",
            "--",
            "true",
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shown = run("setpriv", &args);
    assert_eq!(shown.code, 125, "{}", shown.render());
    let mut settings = snapshot_settings();
    settings.add_filter(&format!(r"0:{}:1", user.uid), "0:[USER UID]:1");
    settings.bind(|| {
        insta::assert_snapshot!("step05_rootless_range", shown.render())
    });
}

/// Removes the host's IPC objects of the test, even if it fails.
struct HostIpc(String);

impl Drop for HostIpc {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.0)
            .args(["ipc-remove", "0xbe57"])
            .output();
    }
}

#[test]
fn ipc_objects_do_not_cross_the_namespace() {
    if !privileged("step05_user_ipc::ipc_objects_do_not_cross_the_namespace") {
        return;
    }
    let (step, probe, rootfs_dir) = (
        step_binary("step05-user-ipc"),
        step_binary("probe"),
        rootfs_arg(),
    );
    let made = run(&probe, &["ipc-make", "0xbe57"]);
    assert_eq!(made.code, 0, "{}", made.render());
    let _cleanup = HostIpc(probe.clone());
    let shown = run(
        &step,
        &[
            "--rootfs",
            &rootfs_dir,
            "--",
            "probe",
            "ipc",
            "ipc-make",
            "0xc0de",
            "ipc",
        ],
    );
    let host_view = run(&probe, &["ipc"]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    // Inside: nothing of the host's, then only its own.
    assert!(
        shown
            .stdout
            .starts_with("ipc shm keys: none\nipc msg keys: none\n")
    );
    assert!(
        shown
            .stdout
            .ends_with("ipc shm keys: 0xc0de\nipc msg keys: 0xc0de\n")
    );
    // Outside: the host's, and not the container's (gone with its namespace).
    assert!(
        host_view.stdout.contains("0xbe57"),
        "{}",
        host_view.render()
    );
    assert!(
        !host_view.stdout.contains("0xc0de"),
        "{}",
        host_view.render()
    );
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step05_ipc", shown.render()));
}

/// `kill -9` of the step ends its container, even though the container
/// switched ids (which clears the parent-death signal, `prctl(2)`): as
/// root with `--userns`, and as an ordinary user (rootless).
#[test]
fn kill_9_of_the_step_ends_the_container() {
    if !privileged("step05_user_ipc::kill_9_of_the_step_ends_the_container") {
        return;
    }
    let user = ThrowawayUser::create("berth-kill5");
    let (step, rootfs_dir) =
        (world_executable("step05-user-ipc"), world_readable_rootfs());
    let as_root: Vec<String> =
        [&step, "--rootfs", rootfs_dir, "--userns", "--"]
            .map(str::to_owned)
            .to_vec();
    let mut rootless = user.setpriv();
    rootless.insert(0, "setpriv".to_owned());
    rootless.extend([&step, "--rootfs", rootfs_dir, "--"].map(str::to_owned));
    for (mut command, seconds) in [(as_root, "31342"), (rootless, "31343")] {
        command.extend(["sleep".to_owned(), seconds.to_owned()]);
        let mut stepper = std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let sleeping = || !host::processes(&["sleep", seconds]).is_empty();
        assert!(host::wait_for(60, sleeping), "the container never ran");
        // setpriv exec'd the step: its pid is the step's.
        stepper.kill().unwrap();
        stepper.wait().unwrap();
        let ended = host::wait_for(60, || !sleeping());
        for pid in host::processes(&["sleep", seconds]) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        assert!(
            ended,
            "{command:?}: the container outlived kill -9 of the step"
        );
    }
}
