//! Chapter 4, exercise 1: `bare_veth` with an MTU of 1400 on both ends of
//! the pair. `IFLA_MTU` goes into each of the two link messages of the one
//! request: the outer one (the host's end) and the peer's, nested inside.
//!
//! ```sh
//! sudo unshare --net -- target/debug/examples/bare_veth_mtu \
//!     sh -c 'ip -o link show dev eth0 | grep -o "mtu [0-9]*"'
//! ```

use std::ffi::OsString;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo};
use nix::sched::CloneFlags;
use step04_net::{child, net};

// ANCHOR: with_mtu
/// `request`, a veth pair's `RTM_NEWLINK`, with `IFLA_MTU` on both ends.
fn with_mtu(request: RouteNetlinkMessage, mtu: u32) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::NewLink(mut link) = request else {
        return request; // not a link: nothing to do
    };
    for attribute in &mut link.attributes {
        let LinkAttribute::LinkInfo(infos) = attribute else {
            continue;
        };
        for info in infos {
            if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = info {
                peer.attributes.push(LinkAttribute::Mtu(mtu)); // eth0
            }
        }
    }
    link.attributes.push(LinkAttribute::Mtu(mtu)); // the host's end
    RouteNetlinkMessage::NewLink(link)
}
// ANCHOR_END: with_mtu

fn main() -> anyhow::Result<()> {
    let command: Vec<OsString> = std::env::args_os().skip(1).collect();
    let container = child::spawn(CloneFlags::CLONE_NEWNET, |_| {
        match child::exec(&command)? {}
    })?;
    let host: net::IfName = "vb-bare".parse()?;
    let peer: net::IfName = "eth0".parse()?;
    // ANCHOR: request
    let request = net::veth_request(&host, &peer, container.pid());
    let request = with_mtu(request, 1400);
    // ANCHOR_END: request
    let flags = NLM_F_CREATE | NLM_F_EXCL;
    net::Netlink::open()?.request(&"RTM_NEWLINK veth", request, flags)?;
    std::process::exit(container.wait()?.into())
}
