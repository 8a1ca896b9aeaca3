//! The typed result of a CNI ADD, and what a claim's status reports of it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::NetworkData;

/// The claim status API takes at most 16 IPs per device.
const MAX_NETWORK_DATA_IPS: usize = 16;

/// The result of ADD, typed (spec 1.x `Result`; 0.4.0 results parse too, their extra
/// `version` fields ignored). The raw JSON is kept: it is the next plugin's `prevResult`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The spec version of the result.
    #[serde(default)]
    pub cni_version: String,
    /// Interfaces the plugins created or touched.
    #[serde(default)]
    pub interfaces: Vec<CniInterface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<CniIp>,
    /// Routes installed.
    #[serde(default)]
    pub routes: Vec<CniRoute>,
    /// DNS information.
    #[serde(default)]
    pub dns: CniDns,
}

/// An interface of a [`CniResult`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniInterface {
    /// Its name.
    pub name: String,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The netns path when the interface is inside the sandbox; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Its MTU (spec 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Its PCI address (spec 1.1 `pciID`).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address of a [`CniResult`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniIp {
    /// Address and prefix length.
    pub address: IpNet,
    /// The gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route of a [`CniResult`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniRoute {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS information of a [`CniResult`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniDns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl CniDns {
    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The pod-side interface `ifname` of `result` and its addresses, for a claim's status.
///
/// The interface is the one named `ifname` with a `sandbox` (the pod side; a bridge
/// plugin also lists host-side interfaces). Addresses are those whose `interface` index
/// points at it; when the result lists no interfaces at all (an IPAM-only chain),
/// every address. `None` when the result has no such interface and does list interfaces.
pub fn network_data(result: &CniResult, ifname: &str) -> Option<NetworkData> {
    let index = result
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
        .or_else(|| result.interfaces.iter().position(|i| i.name == ifname));
    if index.is_none() && !result.interfaces.is_empty() {
        return None;
    }
    let ips = result
        .ips
        .iter()
        .filter(|ip| index.is_none() || ip.interface == index)
        .map(|ip| ip.address)
        .take(MAX_NETWORK_DATA_IPS)
        .collect();
    Some(NetworkData {
        interface_name: ifname.to_owned(),
        ips,
        hardware_address: index.and_then(|i| result.interfaces[i].mac.clone()),
    })
}
/// Parses a result's JSON into [`CniResult`].
///
/// # Errors
/// Why it is not a CNI result (a bad address, a wrong type).
pub fn typed_result(raw: &Value) -> Result<CniResult, String> {
    let result: CniResult = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
    if let Some(bad) = result
        .ips
        .iter()
        .find(|ip| ip.interface.is_some_and(|i| i >= result.interfaces.len()))
    {
        return Err(format!(
            "ip {} points at interface {:?}, but the result lists {} interfaces",
            bad.address,
            bad.interface,
            result.interfaces.len()
        ));
    }
    Ok(result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_parse_and_give_network_data() {
        let raw = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "br0", "mac": "02:00:00:00:00:01"},
                           {"name": "net1", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "192.0.2.5/24", "gateway": "192.0.2.1", "interface": 1},
                    {"address": "192.0.2.6/24", "interface": 0},
                    {"address": "2001:db8::5/64", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}],
            "dns": {"nameservers": ["192.0.2.53"]}
        });
        let result = typed_result(&raw).unwrap();
        let data = network_data(&result, "net1").unwrap();
        let ips: Vec<String> = data.ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["192.0.2.5/24", "2001:db8::5/64"]);
        assert_eq!(data.hardware_address.as_deref(), Some("02:00:00:00:00:02"));
        assert!(network_data(&result, "eth9").is_none());
        let bad = json!({"interfaces": [], "ips": [{"address": "192.0.2.5/24", "interface": 3}]});
        let message = typed_result(&bad).unwrap_err();
        assert!(message.contains("points at interface Some(3)"), "{message}");
    }
}
