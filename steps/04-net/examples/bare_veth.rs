//! A veth pair with nothing around it: a container in a new network
//! namespace, waiting at sync 1, and one `RTM_NEWLINK` request from the
//! parent that creates both ends, the peer `eth0` directly inside the
//! container's namespace. Then the container runs `COMMAND`. Chapter 4
//! shows it before the plan, `attach` and `configure`.
//!
//! ```sh
//! sudo unshare --net -- target/debug/examples/bare_veth \
//!     target/debug/probe network
//! ```

use std::ffi::OsString;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use nix::sched::CloneFlags;
use step04_net::{child, net};

// ANCHOR: bare_veth
fn main() -> anyhow::Result<()> {
    let command: Vec<OsString> = std::env::args_os().skip(1).collect();
    // The container, born in a new network namespace: it waits at sync 1.
    let container = child::spawn(CloneFlags::CLONE_NEWNET, |_| {
        match child::exec(&command)? {}
    })?;
    // The host's side: one request makes both ends of the pair, the peer
    // in the network namespace of the container's process.
    let host: net::IfName = "vb-bare".parse()?;
    let peer: net::IfName = "eth0".parse()?;
    let request = net::veth_request(&host, &peer, container.pid());
    let flags = NLM_F_CREATE | NLM_F_EXCL;
    net::Netlink::open()?.request(&"RTM_NEWLINK veth", request, flags)?;
    // Sync 1: the container goes on, and COMMAND finds eth0 there.
    std::process::exit(container.wait()?.into())
}
// ANCHOR_END: bare_veth
