//! Which interfaces must never be published: loopback, the node's uplinks (interfaces
//! carrying a default route) and whatever the uplinks depend on, and Linux bridges with
//! their ports (a CNI bridge and the host ends of other pods' veths: moving one would cut
//! the pods behind it).

use std::collections::BTreeMap;

use super::scan::LinkSnapshot;

/// Why an interface is not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exclusion {
    /// The loopback interface.
    Loopback,
    /// Carries a default route (IPv4 or IPv6, any table).
    DefaultRoute,
    /// Enslaved to an excluded interface (a port of an uplink bridge or bond).
    PortOfExcluded,
    /// The lower device of an excluded interface (the parent of a macvlan uplink, the
    /// underlay of a vxlan uplink): moving it would cut the uplink.
    LowerOfExcluded,
    /// A Linux bridge, or a port of one.
    Bridged,
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Exclusion::Loopback => "loopback",
            Exclusion::DefaultRoute => "carries a default route",
            Exclusion::PortOfExcluded => "enslaved to an excluded interface",
            Exclusion::LowerOfExcluded => "lower device of an excluded interface",
            Exclusion::Bridged => "a Linux bridge or one of its ports",
        })
    }
}

/// The excluded interfaces of `snapshot`, by ifindex, with the reason.
///
/// Grows the set to a fixed point: ports of excluded controllers, and lower devices of
/// excluded interfaces (except a veth's peer, which IFLA_LINK also names but which an
/// uplink does not depend on).
pub fn excluded(snapshot: &LinkSnapshot) -> BTreeMap<u32, Exclusion> {
    let mut out: BTreeMap<u32, Exclusion> = BTreeMap::new();
    for link in snapshot.links.values().filter(|l| l.loopback) {
        out.insert(link.index, Exclusion::Loopback);
    }
    for index in &snapshot.default_route_ifindexes {
        out.entry(*index).or_insert(Exclusion::DefaultRoute);
    }
    for link in snapshot.links.values() {
        let is_bridge = |l: &super::scan::LinkRecord| l.kind.as_deref() == Some("bridge");
        let in_bridge = link
            .controller
            .and_then(|c| snapshot.links.get(&c))
            .is_some_and(is_bridge);
        // Ports of an excluded (uplink) bridge keep the more telling reason below.
        let uplink_port = link
            .controller
            .and_then(|c| out.get(&c))
            .is_some_and(|why| *why != Exclusion::Bridged);
        if (is_bridge(link) || in_bridge) && !uplink_port {
            out.entry(link.index).or_insert(Exclusion::Bridged);
        }
    }
    loop {
        let mut grown = Vec::new();
        for link in snapshot.links.values() {
            if out.contains_key(&link.index) {
                if let Some(lower) = link
                    .lower
                    .filter(|l| depends_on_lower(link) && !out.contains_key(l))
                {
                    grown.push((lower, Exclusion::LowerOfExcluded));
                }
            } else if link.controller.is_some_and(|c| out.contains_key(&c)) {
                grown.push((link.index, Exclusion::PortOfExcluded));
            }
        }
        if grown.is_empty() {
            return out;
        }
        for (index, why) in grown {
            out.entry(index).or_insert(why);
        }
    }
}

fn depends_on_lower(link: &super::scan::LinkRecord) -> bool {
    !link.lower_in_other_netns && link.kind.as_deref() != Some("veth")
}
