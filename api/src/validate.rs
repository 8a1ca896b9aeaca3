//! Semantic checks of a [`NetworkConfig`]: what the JSON types alone cannot say.
//!
//! Each check records every problem it finds with the path of the field, so one
//! [`ConfigError`] lists all of them. Address-family checks are written once over
//! [`Family`], for IPv4 and IPv6 alike.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{
    API_VERSION, InterfaceConfig, KIND, NeighborConfig, NetworkConfig, RouteConfig, RouteScope,
    RuleConfig, Sysctls,
};
use crate::error::{ConfigError, Problems};
use crate::mac;

/// Linux `IFNAMSIZ` is 16 bytes including the terminating NUL.
pub const MAX_INTERFACE_NAME_LEN: usize = 15;
/// The smallest MTU the kernel lets an IPv4 interface have (RFC 791's 68 octets).
pub const MIN_MTU: u32 = 68;
/// The largest MTU a config may ask for (the largest IP packet).
pub const MAX_MTU: u32 = 65535;
/// IPv6 needs links of at least 1280 octets (RFC 8200); below it the kernel switches
/// IPv6 off on the interface, and its addresses vanish.
pub const MIN_MTU_IPV6: u32 = 1280;
/// The kernel's main routing table, used when a route names none.
pub const MAIN_TABLE: u32 = 254;
/// Largest `arp_ignore` value the kernel defines (8: reply to nothing).
pub const MAX_ARP_IGNORE: u8 = 8;
/// Largest `arp_announce` value the kernel defines (2: best local address).
pub const MAX_ARP_ANNOUNCE: u8 = 2;
/// ethtool feature names live in `ETH_GSTRING_LEN` (32) byte strings, NUL included.
pub const MAX_ETHTOOL_FEATURE_LEN: usize = 31;

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of_addr(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The family of a prefix.
    pub fn of_net(net: IpNet) -> Self {
        Self::of_addr(net.addr())
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

impl NetworkConfig {
    /// Checks everything the JSON types cannot: names, bounds, address families,
    /// duplicates. Collects every problem rather than stopping at the first.
    ///
    /// Checks, by field (paths as users write them):
    /// - `apiVersion` is `netclaim.dev/v1alpha1`, `kind` is `NetworkConfig`;
    /// - `interface.name`: 1-15 bytes (Linux `IFNAMSIZ`), no `/`, `:`, whitespace or NUL,
    ///   not `.` or `..`, not starting with `-` (tools would read it as an option);
    /// - `interface.mtu`: 68-65535, and at least 1280 when any address is IPv6;
    /// - `interface.hardwareAddress`: six hex octets, unicast, not all zero;
    /// - `interface.addresses[i]`: not unspecified, loopback, multicast or broadcast; no
    ///   address twice (whatever its prefix length);
    /// - `interface.routes[i]`: destination without host bits; gateway and source of the
    ///   destination's family, neither unspecified nor multicast; no gateway with scope
    ///   `link` or `host`; table not 0 and not 255 (see below); no destination twice in
    ///   one table;
    /// - `interface.rules[i]`: `from` or `to` set, both of one family, without host bits;
    ///   table as for routes; no rule twice;
    /// - `interface.neighbors[i]`: a unicast address, a valid non-zero MAC; no address twice;
    /// - `interface.sysctls`: `arpIgnore` 0-8, `arpAnnounce` 0-2;
    /// - `interface.ethtoolFeatures`: names of 1-31 characters from `[a-z0-9_-]` (`_` because
    ///   the kernel's own names use it: `tx-udp_tnl-segmentation`), starting with a letter
    ///   or digit (a leading `-` would be an option to ethtool);
    /// - `cni` (CNI mode, see [`crate::cni`]): the network is inline or a reference, not
    ///   both; a known `cniVersion`, a valid network name, plugin `type`s that are bare file
    ///   names, at most [`crate::policy::MAX_PLUGINS`] plugins; no `interface` field other
    ///   than `name` next to it (the plugins configure the interface); `claimMayOverride`
    ///   paths no class may grant and `pluginOverrides` keys or values no claim may set
    ///   ([`crate::policy`]) are refused.
    ///
    /// Tables 0 and 255 are refused: 0 is `RT_TABLE_UNSPEC`, which the kernel quietly turns
    /// into `main` for routes, so writing it hides what happens (omit `table` for main);
    /// 255 is the `local` table, which the kernel fills itself from the addresses, and
    /// routes placed there by hand shadow them.
    ///
    /// # Errors
    /// A [`ConfigError`] with one [`crate::FieldError`] per problem.
    ///
    /// # Example
    /// ```
    /// use netclaim_api::{InterfaceConfig, NetworkConfig};
    ///
    /// let mut config = NetworkConfig::for_interface(InterfaceConfig {
    ///     name: Some("net1".into()),
    ///     mtu: Some(9000),
    ///     ..Default::default()
    /// });
    /// assert!(config.validate().is_ok());
    ///
    /// config.interface.mtu = Some(70000);
    /// let error = config.validate().unwrap_err();
    /// assert_eq!(error.errors[0].path, "interface.mtu");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        if self.api_version != API_VERSION {
            problems.push(
                "apiVersion",
                format!(
                    "{:?} is not supported; want {API_VERSION:?}",
                    self.api_version
                ),
            );
        }
        if self.kind != KIND {
            problems.push(
                "kind",
                format!("{:?} is not supported; want {KIND:?}", self.kind),
            );
        }
        check_interface(&mut problems, "interface", &self.interface);
        if let Some(cni) = &self.cni {
            crate::cni::check_cni(&mut problems, "cni", cni);
            check_static_settings_absent(&mut problems, "interface", &self.interface);
        }
        problems.into_result()
    }
}

fn check_interface(problems: &mut Problems, path: &str, interface: &InterfaceConfig) {
    if let Some(name) = &interface.name
        && let Err(message) = check_interface_name(name)
    {
        problems.push(format!("{path}.name"), message);
    }
    if let Some(mtu) = interface.mtu {
        check_mtu(problems, path, mtu, &interface.addresses);
    }
    if let Some(address) = &interface.hardware_address {
        check_interface_mac(problems, &format!("{path}.hardwareAddress"), address);
    }
    check_addresses(problems, &format!("{path}.addresses"), &interface.addresses);
    check_routes(problems, &format!("{path}.routes"), &interface.routes);
    check_rules(problems, &format!("{path}.rules"), &interface.rules);
    check_neighbors(problems, &format!("{path}.neighbors"), &interface.neighbors);
    if let Some(sysctls) = &interface.sysctls {
        check_sysctls(problems, &format!("{path}.sysctls"), sysctls);
    }
    for name in interface.ethtool_features.keys() {
        if let Err(message) = check_ethtool_feature_name(name) {
            problems.push(format!("{path}.ethtoolFeatures[{name:?}]"), message);
        }
    }
}

/// In CNI mode the plugins configure the interface: every static setting except the
/// name is refused, at its own path.
fn check_static_settings_absent(problems: &mut Problems, path: &str, interface: &InterfaceConfig) {
    for field in static_fields_set(interface) {
        problems.push(
            format!("{path}.{field}"),
            "cannot be set together with `cni`: in CNI mode the CNI plugins configure the \
             interface (put it in the plugin config); only interface.name may be set",
        );
    }
}

/// The `interface` fields other than `name` that are set, by their user-facing names.
pub(crate) fn static_fields_set(interface: &InterfaceConfig) -> Vec<&'static str> {
    let set = [
        ("addresses", !interface.addresses.is_empty()),
        ("mtu", interface.mtu.is_some()),
        ("hardwareAddress", interface.hardware_address.is_some()),
        ("routes", !interface.routes.is_empty()),
        ("rules", !interface.rules.is_empty()),
        ("neighbors", !interface.neighbors.is_empty()),
        ("sysctls", interface.sysctls.is_some()),
        ("ethtoolFeatures", !interface.ethtool_features.is_empty()),
    ];
    set.into_iter()
        .filter_map(|(name, is_set)| is_set.then_some(name))
        .collect()
}

/// Checks a Linux interface name the way the kernel's `dev_valid_name` does.
///
/// # Errors
/// Why the kernel would refuse the name.
///
/// # Example
/// ```
/// use netclaim_api::validate::check_interface_name;
/// assert!(check_interface_name("net1").is_ok());
/// assert!(check_interface_name("a-name-too-long").is_ok()); // 15 bytes
/// assert!(check_interface_name("a-name-too-long!").is_err()); // 16 bytes
/// ```
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_INTERFACE_NAME_LEN {
        return Err(format!(
            "{name:?} is {} bytes; Linux interface names have at most {MAX_INTERFACE_NAME_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if name.starts_with('-') {
        return Err(format!(
            "{name:?} starts with '-': tools that take interface names (ethtool, ip) would \
             read it as an option"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || *c == '\0' || c.is_whitespace())
    {
        return Err(format!(
            "{name:?} contains {bad:?}; interface names must not contain '/', ':', NUL or whitespace"
        ));
    }
    Ok(())
}

fn check_mtu(problems: &mut Problems, path: &str, mtu: u32, addresses: &[IpNet]) {
    let mtu_path = format!("{path}.mtu");
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        problems.push(mtu_path, format!("{mtu} is outside {MIN_MTU}..={MAX_MTU}"));
        return;
    }
    let first_v6 = addresses
        .iter()
        .position(|net| Family::of_net(*net) == Family::V6);
    if let Some(index) = first_v6
        && mtu < MIN_MTU_IPV6
    {
        problems.push(
            mtu_path,
            format!(
                "{mtu} is below {MIN_MTU_IPV6}, the minimum for IPv6, and {path}.addresses[{index}] \
                 ({}) is IPv6",
                addresses[index]
            ),
        );
    }
}

/// The interface's own MAC must be one a NIC can have: unicast and not all zero.
fn check_interface_mac(problems: &mut Problems, path: &str, text: &str) {
    match mac::parse_mac(text) {
        Err(message) => problems.push(path, message),
        Ok(octets) if octets == [0; 6] => problems.push(path, format!("{text} is all zero")),
        Ok(octets) if mac::is_multicast(&octets) => problems.push(
            path,
            format!("{text} is a multicast address (lowest bit of the first octet set)"),
        ),
        Ok(_) => {}
    }
}

fn check_addresses(problems: &mut Problems, path: &str, addresses: &[IpNet]) {
    let mut seen = HashMap::new();
    for (index, net) in addresses.iter().enumerate() {
        let item = format!("{path}[{index}]");
        if let Some(why) = unusable_as_host_address(net.addr()) {
            problems.push(&item, format!("{net}: {why}"));
        }
        // The same address twice with different prefixes is a conflict too: the kernel
        // refuses the second for IPv6 and keeps two entries for IPv4.
        if let Some(first) = seen.insert(net.addr(), index) {
            problems.push(&item, format!("{} duplicates {path}[{first}]", net.addr()));
        }
    }
}

/// Why `addr` cannot be an interface address, a gateway or a neighbor, if it cannot.
fn unusable_as_host_address(addr: IpAddr) -> Option<&'static str> {
    if addr.is_unspecified() {
        Some("the unspecified address is not a host address")
    } else if addr.is_loopback() {
        Some("loopback addresses belong to lo")
    } else if addr.is_multicast() {
        Some("a multicast address is not a host address")
    } else if matches!(addr, IpAddr::V4(v4) if v4.is_broadcast()) {
        Some("the broadcast address is not a host address")
    } else {
        None
    }
}

/// Records a problem when `value`'s family differs from `anchor`'s.
///
/// The one family check, for IPv4 and IPv6 alike: the message reads
/// `2001:db8::1 is IPv6 but destination 192.0.2.0/24 is IPv4`.
fn check_same_family(
    problems: &mut Problems,
    path: String,
    value: (impl fmt::Display, Family),
    anchor_name: &str,
    anchor: (impl fmt::Display, Family),
) {
    if value.1 != anchor.1 {
        problems.push(
            path,
            format!(
                "{} is {} but {anchor_name} {} is {}",
                value.0, value.1, anchor.0, anchor.1
            ),
        );
    }
}

/// Records a problem when a prefix has host bits set: the kernel refuses such a route
/// destination ("Invalid prefix for given prefix length") and a rule would silently match
/// the whole network, so say which network was probably meant.
fn check_no_host_bits(problems: &mut Problems, path: String, net: IpNet) {
    if net.trunc() != net {
        problems.push(
            path,
            format!("{net} has host bits set; did you mean {}?", net.trunc()),
        );
    }
}

/// Records a problem for tables 0 (unspecified) and 255 (local); see
/// [`NetworkConfig::validate`] for why.
fn check_table(problems: &mut Problems, path: String, table: u32) {
    match table {
        0 => problems.push(
            path,
            "table 0 is the kernel's 'unspecified' table; omit the table for main (254)",
        ),
        255 => problems.push(
            path,
            "table 255 is the kernel's local table, which the kernel manages itself",
        ),
        _ => {}
    }
}

fn check_routes(problems: &mut Problems, path: &str, routes: &[RouteConfig]) {
    let mut seen = HashMap::new();
    for (index, route) in routes.iter().enumerate() {
        let item = format!("{path}[{index}]");
        check_route(problems, &item, route);
        let table = route.table.unwrap_or(MAIN_TABLE);
        if let Some(first) = seen.insert((route.destination, table), index) {
            problems.push(
                &item,
                format!(
                    "destination {} in table {table} duplicates {path}[{first}]",
                    route.destination
                ),
            );
        }
    }
}

fn check_route(problems: &mut Problems, item: &str, route: &RouteConfig) {
    let destination = (route.destination, Family::of_net(route.destination));
    check_no_host_bits(problems, format!("{item}.destination"), route.destination);
    for (field, addr) in [("gateway", route.gateway), ("source", route.source)] {
        let Some(addr) = addr else { continue };
        let path = format!("{item}.{field}");
        if addr.is_unspecified() || addr.is_multicast() {
            problems.push(&path, format!("{addr} is not a unicast address"));
        }
        check_same_family(
            problems,
            path,
            (addr, Family::of_addr(addr)),
            "destination",
            destination,
        );
    }
    if let (Some(gateway), Some(scope @ (RouteScope::Link | RouteScope::Host))) =
        (route.gateway, route.scope)
    {
        problems.push(
            format!("{item}.scope"),
            format!(
                "scope {} means directly reachable, but the route goes via gateway {gateway}; \
                 use scope universe or drop the gateway",
                scope_name(scope)
            ),
        );
    }
    if let Some(table) = route.table {
        check_table(problems, format!("{item}.table"), table);
    }
}

fn scope_name(scope: RouteScope) -> &'static str {
    match scope {
        RouteScope::Universe => "universe",
        RouteScope::Link => "link",
        RouteScope::Host => "host",
    }
}

fn check_rules(problems: &mut Problems, path: &str, rules: &[RuleConfig]) {
    for (index, rule) in rules.iter().enumerate() {
        let item = format!("{path}[{index}]");
        check_rule(problems, &item, rule);
        if let Some(first) = rules[..index].iter().position(|earlier| earlier == rule) {
            problems.push(&item, format!("duplicates {path}[{first}]"));
        }
    }
}

fn check_rule(problems: &mut Problems, item: &str, rule: &RuleConfig) {
    match (rule.from, rule.to) {
        (None, None) => problems.push(
            item,
            "a rule needs `from` or `to`; one matching everything would capture all traffic",
        ),
        (Some(from), Some(to)) => check_same_family(
            problems,
            format!("{item}.to"),
            (to, Family::of_net(to)),
            "from",
            (from, Family::of_net(from)),
        ),
        _ => {}
    }
    for (field, net) in [("from", rule.from), ("to", rule.to)] {
        if let Some(net) = net {
            check_no_host_bits(problems, format!("{item}.{field}"), net);
        }
    }
    check_table(problems, format!("{item}.table"), rule.table);
}

fn check_neighbors(problems: &mut Problems, path: &str, neighbors: &[NeighborConfig]) {
    let mut seen = HashMap::new();
    for (index, neighbor) in neighbors.iter().enumerate() {
        let item = format!("{path}[{index}]");
        if let Some(why) = unusable_as_host_address(neighbor.address) {
            problems.push(
                format!("{item}.address"),
                format!("{}: {why}", neighbor.address),
            );
        }
        // A neighbor may have a multicast MAC (some load balancers answer with one), so
        // only the syntax and the all-zero "no address" are refused.
        match mac::parse_mac(&neighbor.hardware_address) {
            Err(message) => problems.push(format!("{item}.hardwareAddress"), message),
            Ok(octets) if octets == [0; 6] => problems.push(
                format!("{item}.hardwareAddress"),
                format!("{} is all zero", neighbor.hardware_address),
            ),
            Ok(_) => {}
        }
        if let Some(first) = seen.insert(neighbor.address, index) {
            problems.push(
                &item,
                format!("{} duplicates {path}[{first}]", neighbor.address),
            );
        }
    }
}

fn check_sysctls(problems: &mut Problems, path: &str, sysctls: &Sysctls) {
    let bounded = [
        ("arpIgnore", sysctls.arp_ignore, MAX_ARP_IGNORE),
        ("arpAnnounce", sysctls.arp_announce, MAX_ARP_ANNOUNCE),
    ];
    for (field, value, max) in bounded {
        if let Some(value) = value
            && value > max
        {
            problems.push(
                format!("{path}.{field}"),
                format!("{value} is outside 0..={max}"),
            );
        }
    }
}

/// Checks an ethtool feature name (`rx-checksum`, `tx-tcp-segmentation`).
///
/// # Errors
/// Why the name cannot be a kernel feature name.
pub fn check_ethtool_feature_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("feature names must not be empty".into());
    }
    if name.len() > MAX_ETHTOOL_FEATURE_LEN {
        return Err(format!(
            "{name:?} is {} bytes; kernel feature names have at most {MAX_ETHTOOL_FEATURE_LEN}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{name:?} contains {bad:?}; feature names use only a-z, 0-9, '-' and '_'"
        ));
    }
    if name.starts_with(['-', '_']) {
        return Err(format!(
            "{name:?} starts with {:?}; feature names start with a letter or digit (ethtool \
             would read a leading '-' as an option)",
            &name[..1]
        ));
    }
    Ok(())
}
