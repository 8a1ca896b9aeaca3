//! What netclaim knows about prepared claims and attached interfaces: the records the
//! checkpoint persists ([`crate::checkpoint`]), the hooks act on ([`crate::hooks`]) and the
//! status writers derive the API's view from ([`crate::reports`]).
//!
//! CONTRACT: add fields with `#[serde(default)]` so older records still load.

use std::collections::BTreeMap;

use ipnet::IpNet;
use netclaim_api::InterfaceConfig;
use serde::{Deserialize, Serialize};

/// A pod, as the runtime (NRI) and the claim's `status.reservedFor` name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    /// The pod's namespace (`K8S_POD_NAMESPACE` for CNI plugins).
    pub namespace: String,
    /// The pod's name (`K8S_POD_NAME`).
    pub name: String,
    /// The pod's UID (`K8S_POD_UID`).
    pub uid: String,
}

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
    /// The device as it was published when the claim was prepared (a `resource.k8s.io/v1`
    /// `Device`): discovery keeps publishing it while the NIC is inside a pod and gone from
    /// the host's view, also after a restart of the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<serde_json::Value>,
    /// Set once an NRI hook started attaching this device to a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// The last attach that failed, reported in the claim's status until an attach
    /// succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<NicFailure>,
    /// The NIC's RDMA device, when it has one and the NIC itself moves into the pod: the
    /// character devices the pod's containers get (as CDI `deviceNodes`) and whether the
    /// RDMA device moves into the pod's netns with the NIC ([`crate::rdma`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma: Option<PreparedRdma>,
    /// What the allocation consumes of the device's capacities (DRA consumable capacity,
    /// `consumedCapacity` of the allocation result): capacity name to quantity, as the
    /// scheduler wrote it. Empty for a device allocated whole.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumed_capacity: BTreeMap<String, String>,
    /// The PodNetwork the device belonged to at prepare (its config was merged under the
    /// class's and the claim's); reported as `status.devices[].data.podNetwork` and as the
    /// network name of the pod's network-status entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_network: Option<String>,
}

/// The RDMA side of a prepared NIC (see [`PreparedNic::rdma`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreparedRdma {
    /// The RDMA device (`mlx5_0`), from `class/net/<if>/device/infiniband/`.
    pub device: String,
    /// Its character devices, which every container of the pod gets.
    #[serde(default)]
    pub char_devices: Vec<RdmaCharDevice>,
    /// The node's RDMA subsystem is in exclusive network-namespace mode: the RDMA device is
    /// only usable from the netns it is in, so it moves into the pod's netns with the NIC
    /// and back with it.
    #[serde(default)]
    pub netns_exclusive: bool,
}

/// One RDMA character device as a container sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RdmaCharDevice {
    /// Path inside the container (`/dev/infiniband/uverbs0`), as udev names it on the host.
    pub path: String,
    /// Major number (from sysfs `dev`).
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Permission bits of the node the runtime creates (the kernel's own mode for it).
    pub file_mode: u32,
}

impl PreparedNic {
    /// The name the interface has (or will have) inside the pod.
    pub fn pod_if_name(&self) -> &str {
        self.config.name.as_deref().unwrap_or(&self.host_if_name)
    }

    /// Whether a CNI network attaches this device (CNI mode) rather than a move of the NIC.
    pub fn is_cni(&self) -> bool {
        self.cni.is_some()
    }

    /// The lock that guards this device's attachment (see [`NicKey`]).
    pub fn lock_key(&self, claim_uid: &str) -> NicKey {
        if self.is_cni() {
            NicKey::Child {
                claim_uid: claim_uid.to_owned(),
                pool: self.pool.clone(),
                device: self.device.clone(),
                share_id: self.share_id.clone(),
            }
        } else {
            NicKey::Host {
                pool: self.pool.clone(),
                device: self.device.clone(),
            }
        }
    }

    /// Whether this entry is the allocation `(device, share_id)`.
    pub fn is(&self, device: &str, share_id: Option<&str>) -> bool {
        self.device == device && self.share_id.as_deref() == share_id
    }
}

/// What a lock in the hooks guards: one host NIC that moves, or one CNI child of a parent
/// that stays on the host. Moves of one NIC never interleave; different NICs never wait on
/// each other.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NicKey {
    /// A NIC moved into a pod: at most one claim holds it (prepare refuses a second).
    Host {
        /// The pool.
        pool: String,
        /// The device.
        device: String,
    },
    /// A CNI-mode attachment: the parent is not moved, so each claim's allocation is its
    /// own unit (children of one shared parent do not wait on each other).
    Child {
        /// The claim.
        claim_uid: String,
        /// The pool.
        pool: String,
        /// The parent device.
        device: String,
        /// The allocation's share id.
        share_id: Option<String>,
    },
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
    /// How far the attach (or the give-back) got.
    pub phase: AttachPhase,
    /// The pod the sandbox belongs to, so that whatever gives the interface back (STOP,
    /// unprepare, reconcile) can update the pod's network-status annotation. `None` in
    /// records written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// What the pod got, once [`AttachPhase::Attached`]: the claim's
    /// `status.devices[].networkData` and network-status entry are derived from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<AttachedNetwork>,
    /// The give-back's last failure ([`AttachPhase::DetachFailed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Attachment {
    /// Whether the interface must be given back before anything else happens to it: a
    /// give-back is under way or failed.
    pub fn is_giving_back(&self) -> bool {
        matches!(
            self.phase,
            AttachPhase::Detaching | AttachPhase::DetachFailed
        )
    }
}

/// What a claim's `status.devices[].networkData` says of an interface in a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkData {
    /// The interface name inside the pod.
    pub interface_name: String,
    /// Its addresses, with prefix length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpNet>,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_address: Option<String>,
}

/// What an attached interface looks like inside the pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedNetwork {
    /// Interface name, addresses and MAC.
    #[serde(flatten)]
    pub data: NetworkData,
    /// CNI mode: the ADD result as the plugins returned it (`status.devices[].data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_result: Option<serde_json::Value>,
    /// When the attach completed (RFC 3339): the `Ready` condition's `lastTransitionTime`.
    pub since: String,
    /// The pod had been running without the interface: the runtime's RunPodSandbox never
    /// reached netclaim (its NRI connection was down), and the interface was attached when
    /// the next Synchronize found the pod.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

/// The lifecycle of one attachment, persisted before each step so a crash at any point
/// can be resolved by the next Synchronize, unprepare or RUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttachPhase {
    /// The host snapshot is recorded; the interface may be on the host or in the pod.
    Attaching,
    /// Fully configured inside the pod.
    Attached,
    /// Being given back; it may be in the pod or already on the host.
    Detaching,
    /// A give-back (a rollback after a failed attach, or a detach) failed: the interface
    /// may still be in the pod. Retried at every Synchronize, unprepare and RUN of the
    /// device until it is back; [`Attachment::error`] says what failed last.
    DetachFailed,
}

/// Why a device of a claim is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureReason {
    /// Moving or configuring the NIC in the pod (or running its CNI network) failed.
    AttachFailed,
    /// The pod runs without the NIC: its RunPodSandbox never reached netclaim, and
    /// attaching it late at the next Synchronize failed.
    NotAttached,
}

impl FailureReason {
    /// The condition and Event reason.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::AttachFailed => "AttachFailed",
            FailureReason::NotAttached => "NotAttached",
        }
    }
}

/// The last failed attach of a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicFailure {
    /// Why.
    pub reason: FailureReason,
    /// What went wrong, for users.
    pub message: String,
    /// When (RFC 3339): the condition's `lastTransitionTime`.
    pub since: String,
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
    /// The pods the claim is reserved for (`status.reservedFor`, in the claim's namespace):
    /// how an NRI hook finds the claims of its pod, and whose network-status annotation
    /// netclaim keeps.
    #[serde(default)]
    pub pods: Vec<PodRef>,
    /// For a claim made from a ResourceClaimTemplate: the pod's name for it
    /// (`pod.spec.resourceClaims[].name`, from the claim's
    /// `resource.kubernetes.io/pod-claim-name` annotation), which names the claim's device
    /// metadata directory inside containers ([`crate::device_metadata`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_claim_name: Option<String>,
    /// The claim's devices for this driver.
    pub nics: Vec<PreparedNic>,
}

impl PreparedClaim {
    /// Whether the claim is reserved for the pod with UID `pod_uid`.
    pub fn is_for_pod(&self, pod_uid: &str) -> bool {
        self.pods.iter().any(|pod| pod.uid == pod_uid)
    }

    /// `<namespace>/<name>`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The device entry `(device, share_id)`.
    pub fn nic(&self, device: &str, share_id: Option<&str>) -> Option<&PreparedNic> {
        self.nics.iter().find(|nic| nic.is(device, share_id))
    }

    /// Whether a device of the claim is in a pod, or on its way in or out.
    pub fn has_attachments(&self) -> bool {
        self.nics.iter().any(|nic| nic.attachment.is_some())
    }
}

/// The current time as the API writes it (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
