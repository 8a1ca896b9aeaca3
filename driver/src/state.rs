//! What netclaim knows about prepared claims and attached interfaces: the data the
//! checkpoint persists and the NRI hooks act on.
//!
//! CONTRACT: these types are shared by `prepare.rs`, `attach.rs`, `hooks.rs` and
//! `checkpoint.rs`; add fields with `#[serde(default)]` so old checkpoints still load.

use std::collections::BTreeMap;

use ipnet::IpNet;
use netclaim_api::InterfaceConfig;
use serde::{Deserialize, Serialize};

/// A host interface as it was before netclaim touched it: everything needed to give it
/// back "exactly as it was".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkSnapshot {
    /// The interface name on the host.
    pub if_name: String,
    /// The host ifindex when the snapshot was taken (informational: the kernel may assign
    /// another one when the interface comes back).
    pub if_index: u32,
    /// MTU on the host.
    pub mtu: u32,
    /// MAC address on the host (`aa:bb:cc:dd:ee:ff`), if it has one.
    pub mac: Option<String>,
    /// Whether it was administratively up.
    pub up: bool,
    /// The interface alias (IFLA_IFALIAS) it had, if any.
    pub alias: Option<String>,
    /// Addresses configured on it (permanent ones; the kernel's link-local v6 excepted).
    pub addresses: Vec<IpNet>,
    /// The link kind (`veth`, `macvlan`, ... or empty for a physical NIC).
    pub kind: String,
    /// The ethtool features the claim changes, as they were (device features travel with
    /// the device across namespaces, so detach sets these back).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ethtool_features: BTreeMap<String, bool>,
}

/// One device of a prepared claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreparedNic {
    /// The claim's request this device satisfies.
    pub request: String,
    /// The pool the device was allocated from.
    pub pool: String,
    /// The device name in the ResourceSlice.
    pub device: String,
    /// The allocation's share id, for shareable devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_id: Option<String>,
    /// The host interface name at prepare time.
    pub host_if_name: String,
    /// The NIC's PCI address at prepare time, when it is a PCI function (the pod's
    /// network-status `device-info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    /// The merged, validated configuration to apply inside the pod.
    pub config: InterfaceConfig,
    /// CNI mode: the network list (`{cniVersion, name, plugins}`) to run for this device,
    /// resolved at prepare with the device already substituted. `None`: the NIC itself is
    /// moved into the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<serde_json::Value>,
    /// CNI mode with a `networkAttachmentDefinition`: the NAD as `<namespace>/<name>`, the
    /// network's name in the pod's network-status annotation (as Multus names it; the
    /// list in `cni` keeps the config's own name, which the CNI cache uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_attachment_definition: Option<String>,
    /// Set once an NRI hook started attaching this device to a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
}

/// Where a device is (or is being) attached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The pod sandbox id (from NRI).
    pub sandbox_id: String,
    /// The pod's network namespace path (from RUN or Synchronize; STOP carries none).
    pub netns_path: String,
    /// The host interface before attach.
    pub host: LinkSnapshot,
    /// The interface name inside the pod.
    pub pod_if_name: String,
    /// How far the attach got.
    pub phase: AttachPhase,
    /// The pod the sandbox belongs to (from RUN or Synchronize), so that whatever gives the
    /// interface back (STOP, unprepare, reconcile) can update the pod's network-status
    /// annotation. `None` in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<crate::cni::PodRef>,
}

/// The lifecycle of one attachment, persisted before each step so a crash at any point
/// can be resolved on restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttachPhase {
    /// The host snapshot is recorded; the interface may be on the host or in the pod.
    Attaching,
    /// Fully configured inside the pod.
    Attached,
    /// Being given back; it may be in the pod or already on the host.
    Detaching,
}

/// A claim netclaim prepared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreparedClaim {
    /// Claim UID.
    pub uid: String,
    /// Claim namespace.
    pub namespace: String,
    /// Claim name.
    pub name: String,
    /// UIDs of the pods the claim is reserved for (`status.reservedFor`), which is how an NRI
    /// hook finds the claims of its pod.
    pub pod_uids: Vec<String>,
    /// The claim's devices for this driver.
    pub nics: Vec<PreparedNic>,
}

/// Everything the checkpoint holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriverState {
    /// Prepared claims by UID.
    pub claims: BTreeMap<String, PreparedClaim>,
}
