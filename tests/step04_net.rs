//! Step 4: a network namespace. `--net none` has only `lo`; `--net bridge`
//! puts `eth0` on a bridge, and two containers on it reach each other and
//! the bridge. The bridge tests run inside a network namespace the test
//! creates (`unshare --net`), so the bridge, its addresses and all traffic
//! stay in that throw-away namespace.

use berth_tests::fixture::rootfs_arg;
use berth_tests::{host, privileged, run, snapshot_settings, step_binary};
use step08_oci::net;

#[test]
fn network_plan_and_the_veth_request() {
    let bridge = net::Options {
        net: net::Mode::Bridge,
        bridge: None,
        ip: Some("10.88.0.2/16".parse().unwrap()),
    };
    let none = net::Options {
        net: net::Mode::None,
        bridge: None,
        ip: None,
    };
    let text = format!(
        "--net bridge --ip 10.88.0.2/16 (step pid 4242):\n{}\n--net none:\n{}",
        net::plan(&bridge, 4242).unwrap(),
        net::plan(&none, 4242).unwrap()
    );
    snapshot_settings().bind(|| insta::assert_snapshot!("step04_plan", text));
    let host: net::IfName = "vb4242".parse().unwrap();
    let peer: net::IfName = "eth0".parse().unwrap();
    let request =
        net::veth_request(&host, &peer, nix::unistd::Pid::from_raw(4243));
    let text = format!("{request:#?}");
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step04_veth_request", text));
}

#[test]
fn net_none_has_only_loopback() {
    if !privileged("step04_net::net_none_has_only_loopback") {
        return;
    }
    let (step, rootfs) = (step_binary("step04-net"), rootfs_arg());
    let before = host::State::now();
    let script = "probe network; ping -c1 -W1 10.88.0.1 >/dev/null 2>&1 || echo 'no route out'";
    let shown = run(
        &step,
        &[
            "--rootfs", &rootfs, "--net", "none", "--", "sh", "-c", script,
        ],
    );
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert!(shown.stdout.contains("no route out"), "{}", shown.render());
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step04_none", shown.render()));
}

#[test]
fn a_link_comes_up_by_name_and_a_missing_one_is_named() {
    if !privileged("step04_net::link_up") {
        return;
    }
    // A thread of its own in a network namespace of its own: the netlink
    // socket and the UDP sockets below are made there, and the host's
    // network is never touched.
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // There is a route to 127.0.0.1 only once lo is up.
        let reach = || {
            std::net::UdpSocket::bind("0.0.0.0:0")
                .and_then(|socket| socket.connect("127.0.0.1:9"))
        };
        assert!(reach().is_err(), "lo is up in a new namespace");
        let mut netlink = net::Netlink::open().unwrap();
        let lo: net::IfName = "lo".parse().unwrap();
        netlink.link_up(&"lo up", &lo).unwrap();
        reach().expect("lo is not up");
        let missing: net::IfName = "nosuch0".parse().unwrap();
        let error = netlink.link_up(&"nosuch0 up", &missing).unwrap_err();
        assert_eq!(error.to_string(), r#"no interface named "nosuch0""#);
        // The socket still answers in order after an error.
        netlink.link_up(&"lo up", &lo).unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn two_containers_on_a_bridge_reach_each_other_and_leave_no_veth() {
    if !privileged(
        "step04_net::two_containers_on_a_bridge_reach_each_other_and_leave_no_veth",
    ) {
        return;
    }
    let (step, rootfs) = (step_binary("step04-net"), rootfs_arg());
    // Container A sleeps; container B shows its network and pings A and the
    // bridge (retrying while A's address is still being set up).
    let script = format!(
        r#"set -e
ip link set lo up
{step} --rootfs {rootfs} --net bridge --ip 10.88.0.2/16 -- sleep 30 &
a=$!
{step} --rootfs {rootfs} --net bridge --ip 10.88.0.3/16 -- sh -c '
  probe network
  for try in 1 2 3 4 5; do ping -c1 -W1 10.88.0.2 >/dev/null && break; done && echo "10.88.0.2 (container A) answers"
  ping -c1 -W1 10.88.0.1 >/dev/null && echo "10.88.0.1 (the bridge) answers"'
kill -TERM $a
wait $a || echo "container A: exit code $?"
echo "veth interfaces left: $(ip -o link show type veth | wc -l)"
ip -br -4 addr show dev berth0"#
    );
    let before = host::State::now();
    let shown = run("unshare", &["--net", "--", "sh", "-c", &script]);
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    for expected in [
        "10.88.0.2 (container A) answers",
        "10.88.0.1 (the bridge) answers",
        "container A: exit code 143",
        "veth interfaces left: 0",
    ] {
        assert!(
            shown.stdout.contains(expected),
            "{expected}: {}",
            shown.render()
        );
    }
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step04_bridge", shown.render()));
}

#[test]
fn a_bad_bridge_is_refused_and_leaves_nothing_behind() {
    if !privileged(
        "step04_net::a_bad_bridge_is_refused_and_leaves_nothing_behind",
    ) {
        return;
    }
    let (step, rootfs) = (step_binary("step04-net"), rootfs_arg());
    let script = format!(
        "exec 2>&1
{step} --rootfs {rootfs} --net bridge --bridge lo -- true || echo \"exit code $?\"
echo \"links: $(ip -o link | wc -l)\"
{step} --rootfs {rootfs} --ip 10.88.0.5/16 -- true || echo \"exit code $?\"
{step} --rootfs {rootfs} --net bridge --ip 10.88.0.1/16 -- true || echo \"exit code $?\""
    );
    let shown = run("unshare", &["--net", "--", "sh", "-c", &script]);
    assert_eq!(shown.code, 0, "{}", shown.render());
    assert!(
        shown.stdout.contains("links: 1"),
        "only lo: {}",
        shown.render()
    );
    snapshot_settings()
        .bind(|| insta::assert_snapshot!("step04_bad_input", shown.render()));
}

#[test]
fn kill_9_of_the_step_leaves_nothing_that_blocks_the_next_run() {
    if !privileged(
        "step04_net::kill_9_of_the_step_leaves_nothing_that_blocks_the_next_run",
    ) {
        return;
    }
    let (step, rootfs) = (step_binary("step04-net"), rootfs_arg());
    // A container on the bridge; its step killed with SIGKILL, which no
    // clean-up code sees. The container dies with it (its parent-death
    // signal), its network namespace with it, and the veth pair with that;
    // the same address on the same bridge works again at once.
    let script = format!(
        r#"set -e
ip link set lo up
{step} --rootfs {rootfs} --net bridge --ip 10.88.0.2/16 -- sleep 7031 &
step=$!
tries=0
until [ "$(ip -o link show type veth | wc -l)" = 1 ] || [ $tries = 200 ]; do
    sleep 0.05; tries=$((tries + 1))
done
echo "veth interfaces while it runs: $(ip -o link show type veth | wc -l)"
kill -KILL $step
wait $step || echo "step: exit code $?"
tries=0
until [ "$(ip -o link show type veth | wc -l)" = 0 ] || [ $tries = 200 ]; do
    sleep 0.05; tries=$((tries + 1))
done
echo "veth interfaces after kill -9: $(ip -o link show type veth | wc -l)"
{step} --rootfs {rootfs} --net bridge --ip 10.88.0.2/16 -- \
    sh -c 'ping -c1 -W2 10.88.0.1 >/dev/null && echo "again: the bridge answers"'
echo "veth interfaces at the end: $(ip -o link show type veth | wc -l)""#
    );
    let before = host::State::now();
    let shown = run("unshare", &["--net", "--", "sh", "-c", &script]);
    before.assert_unchanged();
    assert_eq!(shown.code, 0, "{}", shown.render());
    let container_gone =
        host::wait_for(60, || host::processes(&["sleep", "7031"]).is_empty());
    assert!(container_gone, "the container outlived its step");
    for expected in [
        "veth interfaces while it runs: 1",
        "step: exit code 137",
        "veth interfaces after kill -9: 0",
        "again: the bridge answers",
        "veth interfaces at the end: 0",
    ] {
        assert!(
            shown.stdout.contains(expected),
            "{expected}: {}",
            shown.render()
        );
    }
}
