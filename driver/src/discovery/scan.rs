//! The netlink side of discovery: one handle over an rtnetlink connection that dumps the
//! links, addresses and default routes of the netns the socket was opened in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_core::NetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteType};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::SocketAddr;
use rtnetlink::{Handle, MulticastGroup};

/// One interface as netlink reports it, with its addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkRecord {
    /// ifindex.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link kind (`veth`, `bridge`, `macvlan`, ...); `None` for a NIC without one.
    pub kind: Option<String>,
    /// Current MAC address.
    pub mac: Option<String>,
    /// Permanent MAC address, when the driver reports one.
    pub perm_mac: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operational state as `ip link` prints it, lower-cased (`up`, `down`,
    /// `lowerlayerdown`, `unknown`, ...).
    pub oper_state: String,
    /// Whether the link has carrier (IFLA_CARRIER), when reported.
    pub carrier: Option<bool>,
    /// A loopback interface (IFF_LOOPBACK).
    pub loopback: bool,
    /// The controller (bridge, bond, VRF) this interface is enslaved to.
    pub controller: Option<u32>,
    /// IFLA_LINK: the lower device (macvlan, vlan, vxlan underlay) or, for veth, the peer.
    pub lower: Option<u32>,
    /// Whether IFLA_LINK refers to another netns (IFLA_LINK_NETNSID present).
    pub lower_in_other_netns: bool,
    /// IFLA_IFALIAS.
    pub alias: Option<String>,
    /// IPv4 addresses in kernel order (primary first).
    pub ipv4: Vec<IpNet>,
    /// IPv6 addresses of global or site scope, in kernel order.
    pub ipv6: Vec<IpNet>,
}

/// Everything netlink says about a netns at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkSnapshot {
    /// Links by ifindex, with their addresses.
    pub links: BTreeMap<u32, LinkRecord>,
    /// ifindexes that carry a default route (IPv4 or IPv6, any table).
    pub default_route_ifindexes: BTreeSet<u32>,
}

/// The netlink groups whose events can change what discovery publishes.
pub const WATCHED_GROUPS: &[MulticastGroup] = &[
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
];

/// Netlink event stream of a multicast connection.
pub type EventStream =
    futures::channel::mpsc::UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// An rtnetlink connection bound to one netns, with intent-level queries for discovery.
#[derive(Clone, Debug)]
pub struct RouteSocket {
    handle: Handle,
}

impl RouteSocket {
    /// Opens a connection in the netns of the calling thread and spawns its driver task on
    /// the current tokio runtime.
    pub fn open() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening an rtnetlink socket")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Opens a connection subscribed to [`WATCHED_GROUPS`]: the handle and its event stream.
    pub fn open_watching() -> Result<(Self, EventStream)> {
        let (connection, handle, events) = rtnetlink::new_multicast_connection(WATCHED_GROUPS)
            .context("opening an rtnetlink socket subscribed to link/address/route events")?;
        tokio::spawn(connection);
        Ok((Self { handle }, events))
    }

    /// Like [`RouteSocket::open_watching`], but the socket lives in the netns at
    /// `netns_path` (a `/run/netns/<name>` file).
    ///
    /// A netlink socket belongs to the netns its creator was in at creation time, so a
    /// short-lived thread enters that netns, creates the socket (registered with the
    /// caller's runtime) and exits; this process's other threads never change netns.
    pub fn open_watching_in(netns_path: &Path) -> Result<(Self, EventStream)> {
        let runtime = tokio::runtime::Handle::current();
        let path: PathBuf = netns_path.to_path_buf();
        let opener = std::thread::spawn(move || -> Result<_> {
            let netns = std::fs::File::open(&path)
                .with_context(|| format!("opening netns {}", path.display()))?;
            nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering netns {}", path.display()))?;
            let _in_runtime = runtime.enter();
            rtnetlink::new_multicast_connection(WATCHED_GROUPS)
                .context("opening an rtnetlink socket in the netns")
        });
        let (connection, handle, events) = opener
            .join()
            .map_err(|_| anyhow!("the netns socket opener thread panicked"))??;
        tokio::spawn(connection);
        Ok((Self { handle }, events))
    }

    /// Dumps links, addresses and default routes.
    pub async fn snapshot(&self) -> Result<LinkSnapshot> {
        // One after the other: the kernel runs one dump at a time per netlink socket and
        // answers a second concurrent dump request with EBUSY.
        let link_messages = self.dump_links().await?;
        let address_messages = self.dump_addresses().await?;
        let routes = self.dump_routes().await?;
        let mut links: BTreeMap<u32, LinkRecord> = link_messages
            .iter()
            .map(|m| (m.header.index, link_record(m)))
            .collect();
        for message in &address_messages {
            if let Some(link) = links.get_mut(&message.header.index) {
                add_address(link, message);
            }
        }
        let default_route_ifindexes = routes.iter().flat_map(default_route_oifs).collect();
        Ok(LinkSnapshot {
            links,
            default_route_ifindexes,
        })
    }

    /// All links (RTM_GETLINK dump).
    pub async fn dump_links(&self) -> Result<Vec<LinkMessage>> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .context("dumping links")
    }

    async fn dump_addresses(&self) -> Result<Vec<AddressMessage>> {
        self.handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .context("dumping addresses")
    }

    async fn dump_routes(&self) -> Result<Vec<RouteMessage>> {
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = RouteMessage::default();
            request.header.address_family = family;
            // Table 0 on a socket without strict checking (the default) dumps every table,
            // like `ip route show table all`: a default route in a policy-routing table
            // carries node traffic too, so its interface counts as an uplink.
            let family_routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(request)
                .execute()
                .try_collect()
                .await
                .with_context(|| format!("dumping {family:?} routes"))?;
            routes.extend(family_routes);
        }
        Ok(routes)
    }
}

/// Builds a [`LinkRecord`] (without addresses) from an RTM_NEWLINK message.
pub fn link_record(message: &LinkMessage) -> LinkRecord {
    let mut link = LinkRecord {
        index: message.header.index,
        up: message.header.flags.contains(LinkFlags::Up),
        loopback: message.header.flags.contains(LinkFlags::Loopback),
        oper_state: "unknown".to_owned(),
        ..LinkRecord::default()
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(mac) => link.mac = format_mac(mac),
            LinkAttribute::PermAddress(mac) => link.perm_mac = format_mac(mac),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::OperState(state) => link.oper_state = oper_state_name(state).to_owned(),
            LinkAttribute::Carrier(carrier) => link.carrier = Some(*carrier != 0),
            LinkAttribute::Controller(index) => link.controller = Some(*index),
            LinkAttribute::Link(index) if *index != 0 => link.lower = Some(*index),
            LinkAttribute::LinkNetNsId(_) => link.lower_in_other_netns = true,
            LinkAttribute::IfAlias(alias) if !alias.is_empty() => link.alias = Some(alias.clone()),
            LinkAttribute::LinkInfo(infos) => link.kind = link_kind(infos),
            _ => {}
        }
    }
    link
}

/// RFC 2863 operational state, named as `ip link` names it.
fn oper_state_name(state: &State) -> &'static str {
    match state {
        State::Up => "up",
        State::Down => "down",
        State::LowerLayerDown => "lowerlayerdown",
        State::Dormant => "dormant",
        State::Testing => "testing",
        State::NotPresent => "notpresent",
        _ => "unknown",
    }
}

fn link_kind(infos: &[LinkInfo]) -> Option<String> {
    infos.iter().find_map(|info| match info {
        LinkInfo::Kind(InfoKind::Other(kind)) => Some(kind.clone()),
        LinkInfo::Kind(kind) => Some(kind.to_string()),
        _ => None,
    })
}

/// `aa:bb:cc:dd:ee:ff`; `None` for an all-zero or non-Ethernet-length address.
fn format_mac(bytes: &[u8]) -> Option<String> {
    if bytes.len() != 6 || bytes.iter().all(|b| *b == 0) {
        return None;
    }
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// Adds the address of an RTM_NEWADDR message to its link (IPv6 link-local and host
/// scope are left out: the kernel makes them up and they change with the MAC).
pub fn add_address(link: &mut LinkRecord, message: &AddressMessage) {
    let Some(addr) = address_of(message) else {
        return;
    };
    let Ok(net) = IpNet::new(addr, message.header.prefix_len) else {
        return;
    };
    match addr {
        IpAddr::V4(_) => link.ipv4.push(net),
        IpAddr::V6(_)
            if matches!(
                message.header.scope,
                AddressScope::Universe | AddressScope::Site
            ) =>
        {
            link.ipv6.push(net)
        }
        IpAddr::V6(_) => {}
    }
}

fn address_of(message: &AddressMessage) -> Option<IpAddr> {
    // For IPv4, IFA_LOCAL is the interface's own address and IFA_ADDRESS the peer's on a
    // point-to-point link; IPv6 only sends IFA_ADDRESS.
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// The output interfaces of a default (prefix length 0, unicast) route, multipath included.
pub fn default_route_oifs(route: &RouteMessage) -> Vec<u32> {
    if route.header.destination_prefix_length != 0 || route.header.kind != RouteType::Unicast {
        return Vec::new();
    }
    let mut oifs = Vec::new();
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(index) => oifs.push(*index),
            RouteAttribute::MultiPath(hops) => oifs.extend(hops.iter().map(|h| h.interface_index)),
            _ => {}
        }
    }
    oifs
}
