//! The opaque parameters a DeviceClass or ResourceClaim passes to the `netclaim.dev` driver.
//!
//! Field names are the camelCase keys users write in YAML.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cni::CniConfig;

/// The `apiVersion` of [`NetworkConfig`].
pub const API_VERSION: &str = "netclaim.dev/v1alpha1";
/// The `kind` of [`NetworkConfig`].
pub const KIND: &str = "NetworkConfig";

/// The opaque configuration of one claimed network device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfig {
    /// Must be `netclaim.dev/v1alpha1`.
    pub api_version: String,
    /// Must be `NetworkConfig`.
    pub kind: String,
    /// How the device appears inside the pod.
    #[serde(default)]
    pub interface: InterfaceConfig,
    /// CNI mode: a CNI network run for the device instead of static settings. Only
    /// `interface.name` may be set next to it (see [`crate::cni`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniConfig>,
}

impl NetworkConfig {
    /// A config of the current `apiVersion` and `kind` for `interface`.
    pub fn for_interface(interface: InterfaceConfig) -> Self {
        Self {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            interface,
            cni: None,
        }
    }
}

/// How a claimed interface is configured inside the pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InterfaceConfig {
    /// The interface name inside the pod; defaults to the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    pub name: Option<String>,
    /// Static addresses in CIDR form (`192.0.2.10/24`, `2001:db8::10/64`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub addresses: Vec<IpNet>,
    /// MTU inside the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 68, max = 65535))]
    pub mtu: Option<u32>,
    /// MAC address inside the pod (`02:00:00:00:00:01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_address: Option<String>,
    /// Routes through this interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Policy-routing rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleConfig>,
    /// Permanent neighbor (ARP / NDP) entries on this interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<NeighborConfig>,
    /// Per-interface sysctls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<Sysctls>,
    /// ethtool features to switch on or off, by kernel feature name (`rx-checksum`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ethtool_features: BTreeMap<String, bool>,
}

/// A route through the claimed interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination in CIDR form; `0.0.0.0/0` or `::/0` for a default route.
    #[schemars(with = "String")]
    pub destination: IpNet,
    /// Next hop; same family as `destination`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub gateway: Option<IpAddr>,
    /// Preferred source address; same family as `destination`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub source: Option<IpAddr>,
    /// Routing table (default: main).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Route scope (default: universe, or link when there is no gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RouteScope>,
}

/// Route scopes users may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RouteScope {
    /// Reachable through a gateway.
    Universe,
    /// Directly attached.
    Link,
    /// This host only.
    Host,
}

/// A policy-routing rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule priority; lower runs first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Source prefix matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub from: Option<IpNet>,
    /// Destination prefix matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub to: Option<IpNet>,
    /// Table to look up.
    pub table: u32,
}

/// A permanent neighbor entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NeighborConfig {
    /// The neighbor's IP address.
    #[schemars(with = "String")]
    pub address: IpAddr,
    /// The neighbor's MAC address.
    pub hardware_address: String,
}

/// The per-interface sysctls netclaim sets inside the pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sysctls {
    /// `net.ipv4.conf.<if>.arp_ignore` (0-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 8))]
    pub arp_ignore: Option<u8>,
    /// `net.ipv4.conf.<if>.arp_announce` (0-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2))]
    pub arp_announce: Option<u8>,
    /// `net.ipv4.conf.<if>.forwarding` and `net.ipv6.conf.<if>.forwarding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<bool>,
}
