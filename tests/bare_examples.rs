//! The bare examples the book shows before each hardened listing: the key
//! system calls of a step with nothing around them (`bare_uts`,
//! `bare_pivot_root`, `bare_openat2`, `bare_veth`), and the compiled
//! solutions of exercises (`bare_domainname`). Each is run as a reader
//! would run it, and what it shows is checked: the book includes these
//! snapshots next to the listings.

use std::fs;

use berth_tests::fixture::rootfs_arg;
use berth_tests::{
    example_binary, host, privileged, run, snapshot_settings, step_binary,
    workspace_root,
};

/// The NIS domain name of the caller's UTS namespace.
fn domainname() -> String {
    fs::read_to_string("/proc/sys/kernel/domainname")
        .expect("cannot read /proc/sys/kernel/domainname")
        .trim_end()
        .to_owned()
}

/// `clone(CLONE_NEWUTS)` and `sethostname`: the child is called `box`, the
/// host keeps its name.
#[test]
fn bare_uts_renames_only_the_child() {
    if !privileged("bare_examples::bare_uts_renames_only_the_child") {
        return;
    }
    let bare = example_binary("bare_uts");
    let before = host::State::now();
    let shown = run(&bare, &[]);
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(shown.stdout, "box\n", "{}", shown.render());
    assert_ne!(host::hostname(), "box");
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("bare_uts", shown.render()));
}

/// Chapter 1, exercise 1: the domain name is the UTS namespace's too.
#[test]
fn bare_domainname_sets_both_strings_of_the_child() {
    if !privileged(
        "bare_examples::bare_domainname_sets_both_strings_of_the_child",
    ) {
        return;
    }
    let bare = example_binary("bare_domainname");
    let (before, domain) = (host::State::now(), domainname());
    let shown = run(&bare, &[]);
    before.assert_unchanged();
    assert_eq!(domainname(), domain, "the host's domain name changed");
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(shown.stdout, "box\nexample.org\n", "{}", shown.render());
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("bare_domainname", shown.render()));
}

/// After the pivot, `/` is the rootfs, the classic `chroot` escape finds
/// nothing above it, and no mount is left on the host.
#[test]
fn bare_pivot_root_makes_the_rootfs_the_root() {
    if !privileged("bare_examples::bare_pivot_root_makes_the_rootfs_the_root") {
        return;
    }
    let (bare, rootfs) = (example_binary("bare_pivot_root"), rootfs_arg());
    let mut expected: Vec<String> =
        fs::read_dir(workspace_root().join(&rootfs))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
    expected.sort();
    let before = host::State::now();
    let runs = [
        run(&bare, &[&rootfs, "ls", "/"]),
        run(&bare, &[&rootfs, "probe", "chroot-escape"]),
    ];
    before.assert_unchanged();
    for shown in &runs {
        assert_eq!(shown.code, 0, "{}", shown.render());
    }
    let listed: Vec<&str> = runs[0].stdout.lines().collect();
    assert_eq!(listed, expected, "{}", runs[0].render());
    assert!(
        runs[1].stdout.contains("stayed inside"),
        "{}",
        runs[1].render()
    );
    let text: String = runs.iter().map(|r| r.render() + "\n").collect();
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("bare_pivot_root", text));
}

/// A symlink or `..` that leads out of ROOT takes plain `openat` out, and
/// keeps `openat2(RESOLVE_IN_ROOT)` in. Needs no privilege.
#[test]
fn bare_openat2_stays_in_the_root() {
    let bare = example_binary("bare_openat2");
    const ROOT: &str = "/tmp/berth-bare-root";
    let mut runs = vec![
        run("mkdir", &["-p", "/tmp/berth-bare-root/etc"]),
        run("ln", &["-sfn", "/etc", "/tmp/berth-bare-root/abs"]),
        run(
            "ln",
            &["-sfn", "../../../../etc", "/tmp/berth-bare-root/rel"],
        ),
    ];
    for shown in &runs {
        assert_eq!(shown.code, 0, "{}", shown.render());
    }
    for path in ["abs", "rel", "../../etc"] {
        let shown = run(&bare, &[ROOT, path]);
        assert_eq!(shown.code, 0, "{}", shown.render());
        assert_eq!(
            shown.stdout,
            format!("openat  -> /etc\nopenat2 -> {ROOT}/etc\n"),
            "{}",
            shown.render()
        );
        runs.push(shown);
    }
    let text: String = runs.iter().map(|r| r.render() + "\n").collect();
    snapshot_settings().bind(|| insta::assert_snapshot!("bare_openat2", text));
}

/// One `RTM_NEWLINK` from the parent, and the container finds an `eth0` in
/// its new network namespace. Run inside a network namespace of the test's
/// own (`unshare --net`), so the host end never touches the host.
#[test]
fn bare_veth_puts_eth0_in_the_containers_namespace() {
    if !privileged(
        "bare_examples::bare_veth_puts_eth0_in_the_containers_namespace",
    ) {
        return;
    }
    let (bare, probe) = (example_binary("bare_veth"), step_binary("probe"));
    let before = host::State::now();
    let shown = run("unshare", &["--net", "--", &bare, &probe, "network"]);
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(
        shown.stdout,
        "network:\n  lo down\n  eth0 down\n",
        "{}",
        shown.render()
    );
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("bare_veth", shown.render()));
}

/// Chapter 4, exercise 1: `IFLA_MTU` on both link messages of the request;
/// the container's `eth0` has the MTU asked for.
#[test]
fn bare_veth_mtu_gives_eth0_its_mtu() {
    if !privileged("bare_examples::bare_veth_mtu_gives_eth0_its_mtu") {
        return;
    }
    let bare = example_binary("bare_veth_mtu");
    let show = r#"ip -o link show dev eth0 | grep -o "mtu [0-9]*""#;
    let before = host::State::now();
    let shown = run("unshare", &["--net", "--", &bare, "sh", "-c", show]);
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert_eq!(shown.stdout, "mtu 1400\n", "{}", shown.render());
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("bare_veth_mtu", shown.render()));
}
