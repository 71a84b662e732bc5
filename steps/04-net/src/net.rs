//! The network namespace: interfaces, addresses and routes of the
//! container's own, set up over netlink.
//!
//! `network_namespaces(7)`: a process created with `CLONE_NEWNET` sees a
//! network stack with nothing in it but a loopback interface that is down.
//! To reach anything, it needs an interface whose other end is elsewhere.
//! A `veth` pair is two interfaces joined by a wire; one end can be created
//! directly inside another namespace (`IFLA_NET_NS_PID`). The host end is
//! plugged into a `bridge`, a software switch: every container on the same
//! bridge is on the same Ethernet segment.
//!
//! ```text
//!   host network namespace                 container network namespaces
//!  ┌──────────────────────────────┐       ┌──────────────────────────┐
//!  │ berth0 (bridge) 10.88.0.1/16 │       │ eth0 10.88.0.2/16        │
//!  │   ├── vb4242 ════════════════╪═══════╪═ (veth pair)             │
//!  │   └── vb4243 ════════════╗   │       │ default via 10.88.0.1    │
//!  └──────────────────────────╫───┘       └──────────────────────────┘
//!                             ╚═══════════╪═ eth0 10.88.0.3/16       │
//!                                         └──────────────────────────┘
//! ```
//!
//! Everything is done with `rtnetlink(7)` requests (`RTM_NEWLINK`,
//! `RTM_NEWADDR`, `RTM_NEWROUTE`, …) from Rust, the same messages `ip(8)`
//! sends. The host side (bridge, veth) is the parent's work, done after the
//! child exists (its pid names its namespace) and before it proceeds: this
//! is the first host-side work between the two sync points of
//! [`crate::child`]. The container side (addresses, routes) is the child's,
//! inside its namespace, after sync 1.
//!
//! # Plan, then apply
//!
//! [`plan`] turns the options into a [`Plan`]: [`HostOp`]s for the parent
//! and [`ContainerOp`]s for the child, pure data that a test snapshots.
//! [`attach`] and [`configure`] apply them with netlink.
//!
//! # Simplifications
//!
//! - Without `--ip`, the address is derived from the step process's pid;
//!   the engine (Part II) allocates addresses properly (IPAM) and adds
//!   outbound NAT and port publishing on top of this bridge.
//! - Only IPv4.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use netlink_packet_core::{
    ErrorBuffer, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::route::{
    RouteHeader, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// The `clone(2)` flag this module needs.
pub const CLONE_FLAGS: CloneFlags = CloneFlags::CLONE_NEWNET;

/// The container's end of the veth pair.
pub const CONTAINER_IFNAME: &str = "eth0";

/// The subnet used when `--ip` is not given.
pub const DEFAULT_SUBNET: Ipv4Cidr = Ipv4Cidr {
    address: Ipv4Addr::new(10, 88, 0, 0),
    prefix: 16,
};

/// What can go wrong with the network options or while applying them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--ip` is not `A.B.C.D/PREFIX`, or not a usable host address.
    #[error("invalid address {value:?}: {reason}")]
    InvalidAddress {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An interface name the kernel would refuse.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidIfName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `--ip` or `--bridge` given without `--net bridge`.
    #[error("{option} needs --net bridge")]
    NeedsBridge {
        /// The option given.
        option: &'static str,
    },
    /// `--net bridge` without root: the host side (a bridge, a veth) needs
    /// `CAP_NET_ADMIN` in the host's network namespace.
    #[error(
        "--net bridge needs root (a rootless container can use --net none)"
    )]
    BridgeNeedsRoot,
    /// Opening or binding the netlink socket failed.
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    /// A netlink request was refused or could not be sent.
    #[error("netlink request failed: {request}")]
    Request {
        /// The request, as the plan prints it.
        request: String,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// The kernel's answer could not be decoded.
    #[error("cannot decode the kernel's netlink answer to: {request}")]
    Decode {
        /// The request, as the plan prints it.
        request: String,
    },
    /// `--bridge` names an interface that is not a bridge.
    #[error("interface {name:?} exists and is not a bridge")]
    NotABridge {
        /// Its name.
        name: String,
    },
    /// An interface the plan needs does not exist.
    #[error("no interface named {name:?}")]
    NoSuchLink {
        /// Its name.
        name: String,
    },
}

/// An IPv4 address with its prefix length: `10.88.0.2/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address.
    pub address: Ipv4Addr,
    /// The prefix length (netmask bits).
    pub prefix: u8,
}

impl Ipv4Cidr {
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The subnet's network address (`10.88.0.0`).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask())
    }

    /// The subnet's broadcast address (`10.88.255.255`).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }

    /// The first host address of the subnet: the bridge's, and the
    /// container's gateway (`10.88.0.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }

    /// Whether `address` is in this subnet.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network())
    }

    /// The address `host` places into this subnet (host part `host`).
    fn host(&self, host: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | (host & !self.mask()))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidAddress {
            value: value.to_owned(),
            reason,
        };
        let (address, prefix) = value.split_once('/').ok_or_else(|| {
            invalid("expected ADDRESS/PREFIX, as in 10.88.0.2/16")
        })?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| invalid("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid("the prefix is not a number"))?;
        // /31 and /32 leave no room for a gateway and a container.
        if !(1..=30).contains(&prefix) {
            return Err(invalid("the prefix must be 1 to 30"));
        }
        let cidr = Ipv4Cidr { address, prefix };
        if address == cidr.network() || address == cidr.broadcast() {
            return Err(invalid(
                "that is the subnet's network or broadcast address",
            ));
        }
        if address == cidr.gateway() {
            return Err(invalid("that is the gateway (the bridge's address)"));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// An interface name: 1 to 15 bytes (`IFNAMSIZ` - 1), no `/`, no white
/// space, not `.` or `..` — what the kernel accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfName(String);

impl FromStr for IfName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidIfName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > 15 {
            return Err(invalid("it must be 1 to 15 bytes long"));
        }
        if name == "." || name == ".." {
            return Err(invalid("'.' and '..' are not names"));
        }
        if name.contains('/')
            || name.contains(':')
            || name.contains('\0')
            || name.chars().any(char::is_whitespace)
        {
            return Err(invalid(
                "'/', ':', NUL and white space are not allowed",
            ));
        }
        Ok(IfName(name.to_owned()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the container is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A network namespace with only `lo`.
    None,
    /// A veth pair, its host end on a bridge.
    Bridge,
}

/// The command-line options this module adds.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "net-options")]
pub struct Options {
    /// Networking: `none` (only lo) or `bridge` (a veth pair on a host bridge)
    #[arg(long, value_enum, default_value_t = Mode::None)]
    pub net: Mode,
    /// Host bridge for --net bridge, created if missing [default: berth0]
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<IfName>,
    /// Container address for --net bridge [default: in 10.88.0.0/16]
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub ip: Option<Ipv4Cidr>,
}

/// A step the parent takes in the host's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOp {
    /// Create the bridge unless it exists.
    CreateBridge {
        /// Its name.
        bridge: IfName,
    },
    /// Give the bridge the gateway address, unless it has one in the subnet.
    BridgeAddress {
        /// The bridge.
        bridge: IfName,
        /// The gateway address and the subnet's prefix.
        address: Ipv4Cidr,
    },
    /// Bring the bridge up.
    BridgeUp {
        /// The bridge.
        bridge: IfName,
    },
    /// Create the veth pair, its peer directly in the child's namespace.
    CreateVeth {
        /// The host end.
        host: IfName,
        /// The container end.
        peer: IfName,
    },
    /// Plug the host end into the bridge and bring it up.
    AttachVeth {
        /// The host end.
        host: IfName,
        /// The bridge.
        bridge: IfName,
    },
}

/// A step the child takes inside its network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerOp {
    /// Bring an interface up.
    LinkUp {
        /// The interface.
        link: IfName,
    },
    /// Add an address to an interface.
    Address {
        /// The interface.
        link: IfName,
        /// The address.
        address: Ipv4Cidr,
    },
    /// Route everything else through the gateway.
    DefaultRoute {
        /// The interface.
        link: IfName,
        /// The gateway.
        via: Ipv4Addr,
    },
}

/// Everything this module will do, for both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The parent's steps, between `clone` and sync 1.
    pub host: Vec<HostOp>,
    /// The child's steps, after sync 1.
    pub container: Vec<ContainerOp>,
}

fn ifname(name: &str) -> IfName {
    IfName(name.to_owned())
}

// ANCHOR: plan
/// The plan for `options`. `step_pid` is the pid of the step process (the
/// parent): it names the host end of the veth (`vb<pid>`), which is then
/// unique among running containers, and picks the default address.
pub fn plan(options: &Options, step_pid: u32) -> Result<Plan, Error> {
    let lo = ContainerOp::LinkUp { link: ifname("lo") };
    if options.net == Mode::None {
        if options.ip.is_some() {
            return Err(Error::NeedsBridge { option: "--ip" });
        }
        if options.bridge.is_some() {
            return Err(Error::NeedsBridge { option: "--bridge" });
        }
        return Ok(Plan {
            host: vec![],
            container: vec![lo],
        });
    }
    let bridge = options.bridge.clone().unwrap_or_else(|| ifname("berth0"));
    let address = options.ip.unwrap_or_else(|| {
        // Host parts 2 ..= 65534: not the network, gateway or broadcast.
        let host = 2 + step_pid % (u32::from(u16::MAX) - 2);
        Ipv4Cidr {
            address: DEFAULT_SUBNET.host(host),
            prefix: DEFAULT_SUBNET.prefix,
        }
    });
    let gateway = Ipv4Cidr {
        address: address.gateway(),
        prefix: address.prefix,
    };
    let (host_end, eth0) =
        (IfName(format!("vb{step_pid}")), ifname(CONTAINER_IFNAME));
    Ok(Plan {
        host: vec![
            HostOp::CreateBridge {
                bridge: bridge.clone(),
            },
            HostOp::BridgeAddress {
                bridge: bridge.clone(),
                address: gateway,
            },
            HostOp::BridgeUp {
                bridge: bridge.clone(),
            },
            HostOp::CreateVeth {
                host: host_end.clone(),
                peer: eth0.clone(),
            },
            HostOp::AttachVeth {
                host: host_end,
                bridge,
            },
        ],
        container: vec![
            lo,
            ContainerOp::Address {
                link: eth0.clone(),
                address,
            },
            ContainerOp::LinkUp { link: eth0.clone() },
            ContainerOp::DefaultRoute {
                link: eth0,
                via: gateway.address,
            },
        ],
    })
}
// ANCHOR_END: plan

/// A blocking `NETLINK_ROUTE` socket that sends one request at a time and
/// waits for the kernel's acknowledgement.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    /// Open a socket in the calling process's network namespace.
    pub fn open() -> Result<Netlink, Error> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
        socket.bind_auto().map_err(Error::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(Error::Socket)?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    // ANCHOR: request
    /// Send `message` with `flags` (plus `NLM_F_REQUEST | NLM_F_ACK`) and
    /// collect the answers until the acknowledgement (or, for a dump,
    /// `NLMSG_DONE`). `what` names the request in errors.
    pub fn request(
        &mut self,
        what: &dyn fmt::Display,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let failed = |source| Error::Request {
            request: what.to_string(),
            source,
        };
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet =
            NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        let mut answers = Vec::new();
        self.exchange(what, &bytes, |answer| {
            let answer =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(answer)
                    .map_err(|_| Error::Decode {
                        request: what.to_string(),
                    })?;
            match answer.payload {
                NetlinkPayload::Error(error) => match error.code {
                    None => Ok(Some(())),
                    Some(code) => Err(failed(Errno::from_raw(-code.get()))),
                },
                NetlinkPayload::Done(_) => Ok(Some(())),
                NetlinkPayload::InnerMessage(inner) => {
                    answers.push(inner);
                    Ok(None)
                }
                _ => Ok(None),
            }
        })?;
        Ok(answers)
    }

    /// Send `request`, numbered `self.sequence`, and read the kernel's
    /// answers to it: `each` gets every message that carries our number,
    /// whole, until it returns `Some` (or an error). `what` names the
    /// request in errors.
    fn exchange<T>(
        &mut self,
        what: &dyn fmt::Display,
        request: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<Option<T>, Error>,
    ) -> Result<T, Error> {
        let failed = |source| Error::Request {
            request: what.to_string(),
            source,
        };
        self.socket
            .send(request, 0)
            .map_err(|e| failed(io_errno(&e)))?;
        loop {
            let (datagram, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| failed(io_errno(&e)))?;
            // One datagram can hold several messages, each with its length.
            let mut rest = datagram.as_slice();
            while !rest.is_empty() {
                let header =
                    NetlinkBuffer::new_checked(rest).map_err(|_| {
                        Error::Decode {
                            request: what.to_string(),
                        }
                    })?;
                let length = header.length() as usize;
                if header.sequence_number() == self.sequence
                    && let Some(done) = each(&rest[..length])?
                {
                    return Ok(done);
                }
                rest = &rest[length.next_multiple_of(4).min(rest.len())..];
            }
        }
    }
    // ANCHOR_END: request

    /// The index of interface `name`.
    pub fn link_index(&mut self, name: &IfName) -> Result<u32, Error> {
        Ok(self.link(name)?.header.index)
    }

    /// What the kernel says about interface `name`.
    fn link(&mut self, name: &IfName) -> Result<LinkMessage, Error> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.0.clone()));
        let what = format!("RTM_GETLINK {name}");
        let answers =
            match self.request(&what, RouteNetlinkMessage::GetLink(message), 0)
            {
                Err(Error::Request {
                    source: Errno::ENODEV,
                    ..
                }) => {
                    return Err(Error::NoSuchLink {
                        name: name.0.clone(),
                    });
                }
                other => other?,
            };
        answers
            .into_iter()
            .find_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            })
            .ok_or_else(|| Error::NoSuchLink {
                name: name.0.clone(),
            })
    }

    /// Whether interface `name` is a bridge.
    fn is_bridge(&mut self, name: &IfName) -> Result<bool, Error> {
        let link = self.link(name)?;
        Ok(link.attributes.iter().any(|attribute| match attribute {
            LinkAttribute::LinkInfo(infos) => infos
                .iter()
                .any(|info| matches!(info, LinkInfo::Kind(InfoKind::Bridge))),
            _ => false,
        }))
    }

    /// Bring interface `index` up, and make it a port of `controller`.
    fn set_link(
        &mut self,
        what: &dyn fmt::Display,
        index: u32,
        controller: Option<u32>,
    ) -> Result<(), Error> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        if let Some(controller) = controller {
            message
                .attributes
                .push(LinkAttribute::Controller(controller));
        }
        self.request(what, RouteNetlinkMessage::SetLink(message), 0)?;
        Ok(())
    }

    // ANCHOR: link_up
    /// Bring interface `name` up: one `RTM_SETLINK` with index 0 and the
    /// name (`IFLA_IFNAME`), so the kernel finds the interface itself
    /// (`rtnetlink(7)`), where an index needs an `RTM_GETLINK` first.
    ///
    /// Written by hand, 40 bytes: a container's loopback is all the
    /// runtime (Part II) ever asks of netlink, and the generic codec of
    /// route messages ([`Netlink::request`]) would add half a megabyte to
    /// its binary, most of it in memory at every start.
    pub fn link_up(
        &mut self,
        what: &dyn fmt::Display,
        name: &IfName,
    ) -> Result<(), Error> {
        const RTM_SETLINK: u16 = 19;
        const IFLA_IFNAME: u16 = 3;
        self.sequence += 1;
        let name_bytes = name.0.as_bytes();
        // rtattr: length, type, the NUL-terminated name, padded to 4.
        let attribute_len = 4 + name_bytes.len() + 1;
        let len = 16 + 16 + attribute_len.next_multiple_of(4);
        let mut message = Vec::with_capacity(len);
        // nlmsghdr: length, type, flags, sequence, port (0: the kernel).
        message.extend((len as u32).to_ne_bytes());
        message.extend(RTM_SETLINK.to_ne_bytes());
        message.extend((NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        message.extend(self.sequence.to_ne_bytes());
        message.extend(0u32.to_ne_bytes());
        // ifinfomsg: family, padding, type, index 0, flags, change mask.
        message.extend([nix::libc::AF_UNSPEC as u8, 0, 0, 0]);
        message.extend(0i32.to_ne_bytes());
        message.extend((nix::libc::IFF_UP as u32).to_ne_bytes());
        message.extend((nix::libc::IFF_UP as u32).to_ne_bytes());
        message.extend((attribute_len as u16).to_ne_bytes());
        message.extend(IFLA_IFNAME.to_ne_bytes());
        message.extend(name_bytes);
        message.resize(len, 0);
        // The answer: an NLMSG_ERROR whose error is 0 (an acknowledgement)
        // or a negative errno.
        self.exchange(what, &message, |answer| {
            let header = NetlinkBuffer::new(answer);
            if header.message_type() != NLMSG_ERROR {
                return Ok(None);
            }
            let error =
                ErrorBuffer::new_checked(header.payload()).map_err(|_| {
                    Error::Decode {
                        request: what.to_string(),
                    }
                })?;
            match error.code().map(|code| Errno::from_raw(-code.get())) {
                None => Ok(Some(())),
                Some(Errno::ENODEV) => Err(Error::NoSuchLink {
                    name: name.0.clone(),
                }),
                Some(errno) => Err(Error::Request {
                    request: what.to_string(),
                    source: errno,
                }),
            }
        })
    }
    // ANCHOR_END: link_up

    /// The IPv4 addresses on interface `index`.
    fn addresses(
        &mut self,
        what: &dyn fmt::Display,
        index: u32,
    ) -> Result<Vec<Ipv4Addr>, Error> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        let answers = self.request(
            what,
            RouteNetlinkMessage::GetAddress(message),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewAddress(a)
                    if a.header.index == index =>
                {
                    Some(a)
                }
                _ => None,
            })
            .flat_map(|a| a.attributes.iter())
            .filter_map(|attribute| match attribute {
                AddressAttribute::Local(IpAddr::V4(address)) => Some(*address),
                _ => None,
            })
            .collect())
    }

    /// Add `address` to interface `index`.
    fn add_address(
        &mut self,
        what: &dyn fmt::Display,
        index: u32,
        address: Ipv4Cidr,
    ) -> Result<(), Error> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = address.prefix;
        message.header.index = index;
        message.attributes.extend([
            AddressAttribute::Local(IpAddr::V4(address.address)),
            AddressAttribute::Address(IpAddr::V4(address.address)),
            AddressAttribute::Broadcast(address.broadcast()),
        ]);
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        self.request(what, RouteNetlinkMessage::NewAddress(message), flags)?;
        Ok(())
    }
}

/// The errno inside an I/O error from netlink-sys.
fn io_errno(error: &std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(Errno::EIO as i32))
}

// ANCHOR: veth_request
/// The `RTM_NEWLINK` request that creates a veth pair: `host` here, `peer`
/// created directly in the network namespace of process `child`.
pub fn veth_request(
    host: &IfName,
    peer: &IfName,
    child: Pid,
) -> RouteNetlinkMessage {
    let mut peer_message = LinkMessage::default();
    peer_message.attributes.extend([
        LinkAttribute::IfName(peer.0.clone()),
        LinkAttribute::NetNsPid(child.as_raw() as u32),
    ]);
    let mut message = LinkMessage::default();
    message.attributes.extend([
        LinkAttribute::IfName(host.0.clone()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
        ]),
    ]);
    RouteNetlinkMessage::NewLink(message)
}
// ANCHOR_END: veth_request

/// The `RTM_NEWLINK` request that creates a bridge.
fn bridge_request(bridge: &IfName) -> RouteNetlinkMessage {
    let mut message = LinkMessage::default();
    message.attributes.extend([
        LinkAttribute::IfName(bridge.0.clone()),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
    ]);
    RouteNetlinkMessage::NewLink(message)
}

/// The `RTM_NEWROUTE` request for a default route via `gateway` on `index`.
fn default_route_request(gateway: Ipv4Addr, index: u32) -> RouteNetlinkMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.destination_prefix_length = 0;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::Boot;
    message.header.scope = RouteScope::Universe;
    message.header.kind = RouteType::Unicast;
    message.attributes.extend([
        RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
        RouteAttribute::Oif(index),
    ]);
    RouteNetlinkMessage::NewRoute(message)
}

// ANCHOR: attached
/// The host end of a veth pair, deleted when dropped.
///
/// The kernel deletes a veth pair when the namespace of either end goes
/// away, but network namespaces are torn down asynchronously; deleting the
/// host end ourselves means it is gone when the step exits.
#[derive(Debug)]
pub struct Attached {
    veth: Option<IfName>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let Some(veth) = self.veth.take() else {
            return;
        };
        // ENODEV: already gone with the container's namespace. Any other
        // failure has nowhere to go from a destructor; the pair still dies
        // with the namespace.
        let Ok(mut netlink) = Netlink::open() else {
            return;
        };
        if let Ok(index) = netlink.link_index(&veth) {
            let mut message = LinkMessage::default();
            message.header.index = index;
            let what = format!("RTM_DELLINK {veth}");
            let _ = netlink.request(
                &what,
                RouteNetlinkMessage::DelLink(message),
                0,
            );
        }
    }
}
// ANCHOR_END: attached

// ANCHOR: attach
/// Apply the host side of `plan` for the container process `child`. Call it
/// in the parent, between [`crate::child::spawn`] and
/// [`crate::child::Child::wait`]. Keep the returned guard until the
/// container has exited.
pub fn attach(plan: &Plan, child: Pid) -> Result<Attached, Error> {
    let mut attached = Attached { veth: None };
    if plan.host.is_empty() {
        return Ok(attached);
    }
    // Said before the first request fails with a bare EPERM.
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::BridgeNeedsRoot);
    }
    let mut netlink = Netlink::open()?;
    for op in &plan.host {
        match op {
            HostOp::CreateBridge { bridge } => {
                let flags = NLM_F_CREATE | NLM_F_EXCL;
                match netlink.request(op, bridge_request(bridge), flags) {
                    // It exists: fine if it is a bridge (a second container).
                    Err(Error::Request {
                        source: Errno::EEXIST,
                        ..
                    }) => {
                        if !netlink.is_bridge(bridge)? {
                            return Err(Error::NotABridge {
                                name: bridge.0.clone(),
                            });
                        }
                    }
                    other => {
                        other?;
                    }
                }
            }
            HostOp::BridgeAddress { bridge, address } => {
                let index = netlink.link_index(bridge)?;
                let present = netlink.addresses(op, index)?;
                if !present.iter().any(|a| address.contains(*a)) {
                    match netlink.add_address(op, index, *address) {
                        // Another container starting at the same time got
                        // there first: the address is what we wanted.
                        Err(Error::Request {
                            source: Errno::EEXIST,
                            ..
                        }) => {}
                        other => other?,
                    }
                }
            }
            HostOp::BridgeUp { bridge } => {
                let index = netlink.link_index(bridge)?;
                netlink.set_link(op, index, None)?;
            }
            HostOp::CreateVeth { host, peer } => {
                let flags = NLM_F_CREATE | NLM_F_EXCL;
                netlink.request(op, veth_request(host, peer, child), flags)?;
                attached.veth = Some(host.clone());
            }
            HostOp::AttachVeth { host, bridge } => {
                let bridge_index = netlink.link_index(bridge)?;
                let index = netlink.link_index(host)?;
                netlink.set_link(op, index, Some(bridge_index))?;
            }
        }
    }
    Ok(attached)
}
// ANCHOR_END: attach

/// Bring `lo` up in the calling process's network namespace: all that a
/// container without a network of its own gets (step 8's runtime), and
/// without [`configure`], which would bring the whole route-message codec
/// into its binary.
pub fn loopback_up() -> Result<(), Error> {
    let lo = ifname("lo");
    let op = ContainerOp::LinkUp { link: lo.clone() };
    crate::trace::event(4, || format!("netlink: {op}"));
    Netlink::open()?.link_up(&op, &lo)
}

// ANCHOR: configure
/// Apply the container side of `plan`. Call it in the child, inside its
/// network namespace, after sync 1 (the veth's peer exists by then).
pub fn configure(plan: &Plan) -> Result<(), Error> {
    let mut netlink = Netlink::open()?;
    for op in &plan.container {
        crate::trace::event(4, || format!("netlink: {op}"));
        match op {
            ContainerOp::LinkUp { link } => netlink.link_up(op, link)?,
            ContainerOp::Address { link, address } => {
                let index = netlink.link_index(link)?;
                netlink.add_address(op, index, *address)?;
            }
            ContainerOp::DefaultRoute { link, via } => {
                let index = netlink.link_index(link)?;
                let flags = NLM_F_CREATE | NLM_F_EXCL;
                netlink.request(
                    op,
                    default_route_request(*via, index),
                    flags,
                )?;
            }
        }
    }
    Ok(())
}
// ANCHOR_END: configure

impl fmt::Display for HostOp {
    /// The netlink request(s) this op sends, as the plan snapshot shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostOp::CreateBridge { bridge } => write!(
                f,
                "RTM_NEWLINK  ifname={bridge} kind=bridge (NLM_F_CREATE|NLM_F_EXCL; EEXIST is fine)"
            ),
            HostOp::BridgeAddress { bridge, address } => write!(
                f,
                "RTM_NEWADDR  {address} on {bridge}, unless RTM_GETADDR shows one in {}/{}",
                address.network(),
                address.prefix
            ),
            HostOp::BridgeUp { bridge } => {
                write!(f, "RTM_SETLINK  {bridge} up")
            }
            HostOp::CreateVeth { host, peer } => write!(
                f,
                "RTM_NEWLINK  ifname={host} kind=veth peer=(ifname={peer} net_ns_pid=CHILD)"
            ),
            HostOp::AttachVeth { host, bridge } => {
                write!(f, "RTM_SETLINK  {host} master={bridge} up")
            }
        }
    }
}

impl fmt::Display for ContainerOp {
    /// The netlink request this op sends, as the plan snapshot shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerOp::LinkUp { link } => write!(f, "RTM_SETLINK  {link} up"),
            ContainerOp::Address { link, address } => {
                write!(f, "RTM_NEWADDR  {address} on {link}")
            }
            ContainerOp::DefaultRoute { link, via } => {
                write!(f, "RTM_NEWROUTE default via {via} dev {link}")
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.host {
            writeln!(f, "parent (host netns)       {op}")?;
        }
        for op in &self.container {
            writeln!(f, "child (container netns)   {op}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_arithmetic() {
        let cidr: Ipv4Cidr = "10.88.3.7/16".parse().unwrap();
        assert_eq!(cidr.network(), Ipv4Addr::new(10, 88, 0, 0));
        assert_eq!(cidr.broadcast(), Ipv4Addr::new(10, 88, 255, 255));
        assert_eq!(cidr.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert!(cidr.contains(Ipv4Addr::new(10, 88, 200, 1)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 89, 0, 1)));
    }

    #[test]
    fn unusable_addresses_are_refused() {
        for (value, reason) in [
            ("10.88.0.2", "expected ADDRESS/PREFIX, as in 10.88.0.2/16"),
            ("10.88.0.300/16", "not an IPv4 address"),
            ("10.88.0.2/33", "the prefix must be 1 to 30"),
            ("10.88.0.2/x", "the prefix is not a number"),
            (
                "10.88.0.0/16",
                "that is the subnet's network or broadcast address",
            ),
            (
                "10.88.255.255/16",
                "that is the subnet's network or broadcast address",
            ),
            ("10.88.0.1/16", "that is the gateway (the bridge's address)"),
        ] {
            match value.parse::<Ipv4Cidr>() {
                Err(Error::InvalidAddress { reason: got, .. }) => {
                    assert_eq!(got, reason)
                }
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn interface_names_follow_the_kernels_rules() {
        assert!("berth0".parse::<IfName>().is_ok());
        for bad in ["", "a-name-that-is-too-long", "a/b", "a b", "..", "lo\0x"]
        {
            assert!(bad.parse::<IfName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_address_avoids_network_gateway_and_broadcast() {
        let options = Options {
            net: Mode::Bridge,
            bridge: None,
            ip: None,
        };
        for pid in [0, 1, 65533, 65534, 65535, 131070, 4_194_303] {
            let plan = plan(&options, pid).unwrap();
            let Some(ContainerOp::Address { address, .. }) =
                plan.container.get(1)
            else {
                panic!("no address in {plan:?}");
            };
            let a = address.address;
            assert!(DEFAULT_SUBNET.contains(a));
            assert!(
                a != address.network()
                    && a != address.gateway()
                    && a != address.broadcast()
            );
        }
    }
}
