//! The device attributes netclaim publishes in its ResourceSlices, and the API's rules for
//! names and values, checked before publishing so a slice is never refused whole.
//!
//! netclaim's own attributes are bare C identifiers: in a ResourceSlice they belong to the
//! driver's domain, so a DeviceClass selector reads them as
//! `device.attributes["netclaim.dev"].ifName`. Attributes of other domains are fully
//! qualified (`resource.kubernetes.io/pcieRoot`).

/// Interface name on the host (`eth1`). string.
pub const IF_NAME: &str = "ifName";
/// Interface alias (`ip link set ... alias`), useful as an admin-set label. string.
pub const ALIAS: &str = "alias";
/// Current MAC address. string.
pub const MAC: &str = "mac";
/// Permanent (factory) MAC address, when it differs from the current one. string.
pub const PERM_MAC: &str = "permMac";
/// Current MTU. int.
pub const MTU: &str = "mtu";
/// PCI address of the device (`0000:03:00.0`). string.
pub const PCI_ADDRESS: &str = "pciAddress";
/// PCI vendor id, four hex digits (`8086`). string.
pub const PCI_VENDOR_ID: &str = "pciVendorId";
/// PCI device id, four hex digits (`1572`). string.
pub const PCI_DEVICE_ID: &str = "pciDeviceId";
/// PCI subsystem vendor id. string.
pub const PCI_SUBSYSTEM_VENDOR_ID: &str = "pciSubsystemVendorId";
/// PCI subsystem device id. string.
pub const PCI_SUBSYSTEM_DEVICE_ID: &str = "pciSubsystemDeviceId";
/// NUMA node of the device; absent where the kernel reports none (-1). int.
pub const NUMA_NODE: &str = "numaNode";
/// Whether the device is an SR-IOV physical function able to have VFs. bool.
pub const SRIOV: &str = "sriov";
/// Number of VFs currently enabled on a physical function (`sriov_numvfs`). int.
pub const SRIOV_VFS: &str = "sriovVfs";
/// Number of VFs a physical function supports (`sriov_totalvfs`). int.
pub const SRIOV_TOTAL_VFS: &str = "sriovTotalVfs";
/// Whether the device is an SR-IOV virtual function. bool.
pub const IS_SRIOV_VF: &str = "isSriovVf";
/// For a VF: the interface name of its physical function. string.
pub const PF_NAME: &str = "pfName";
/// For a VF: the PCI address of its physical function. string.
pub const PF_PCI_ADDRESS: &str = "pfPciAddress";
/// For a VF: its index under the physical function. int.
pub const VF_INDEX: &str = "vfIndex";
/// Whether the device has an RDMA device. bool.
pub const RDMA: &str = "rdma";
/// Name of the RDMA device (`mlx5_0`). string.
pub const RDMA_DEVICE: &str = "rdmaDevice";
/// Whether the interface is virtual (no parent bus device: veth, macvlan, bridge...). bool.
pub const VIRTUAL: &str = "virtual";
/// Link type as the kernel names it (`device`, `veth`, `macvlan`, `bridge`, `vxlan`). string.
pub const TYPE: &str = "type";
/// The interface's IPv4 addresses in CIDR form, comma-separated, cut to fit. string.
pub const IPV4: &str = "ipv4";
/// The interface's IPv6 global addresses in CIDR form, comma-separated, cut to fit. string.
pub const IPV6: &str = "ipv6";
/// Kernel driver bound to the device (`ixgbe`, `virtio_net`). string.
pub const KERNEL_DRIVER: &str = "kernelDriver";
/// Link speed in Mb/s; absent while unknown. int.
pub const SPEED: &str = "speed";
/// Published only on shared parent NICs (`--shared-filter`), always `true` there: the
/// device takes many allocations at once, each a CNI child (macvlan, ipvlan) of the NIC,
/// counted against the [`CHILDREN`] capacity. bool.
pub const SHARED: &str = "shared";

/// The consumable capacity of a shared parent NIC: how many CNI children it may have at
/// once (`--shared-children`). Each allocation consumes one (the capacity's request policy
/// allows only `1`). Fully qualified on purpose: the scheduler matches a claim's
/// `capacity.requests` keys against the device's capacity keys literally, so claims write
/// exactly this name.
pub const CHILDREN: &str = "netclaim.dev/children";

/// Every attribute identifier netclaim publishes in its own domain.
pub const NETCLAIM_ATTRIBUTES: &[&str] = &[
    IF_NAME,
    ALIAS,
    MAC,
    PERM_MAC,
    MTU,
    PCI_ADDRESS,
    PCI_VENDOR_ID,
    PCI_DEVICE_ID,
    PCI_SUBSYSTEM_VENDOR_ID,
    PCI_SUBSYSTEM_DEVICE_ID,
    NUMA_NODE,
    SRIOV,
    SRIOV_VFS,
    SRIOV_TOTAL_VFS,
    IS_SRIOV_VF,
    PF_NAME,
    PF_PCI_ADDRESS,
    VF_INDEX,
    RDMA,
    RDMA_DEVICE,
    VIRTUAL,
    TYPE,
    IPV4,
    IPV6,
    KERNEL_DRIVER,
    SPEED,
    SHARED,
];

/// The domain of netclaim's own attributes (the driver name): a DeviceClass selector reads
/// them as `device.attributes["netclaim.dev"]`.
pub const DRIVER_DOMAIN: &str = crate::DRIVER_NAME;
/// The domain of attributes Kubernetes itself defines.
pub const KUBERNETES_DOMAIN: &str = "resource.kubernetes.io";
/// The domain of the Multus interop attributes.
pub const MULTUS_DOMAIN: &str = "k8s.cni.cncf.io";

/// Kubernetes' standard attribute: the PCIe root complex of the device (`pci<domain>:<bus>`),
/// so a claim can align NICs and GPUs of different drivers on one root with
/// `matchAttribute`. string.
pub const PCIE_ROOT: &str = "resource.kubernetes.io/pcieRoot";
/// Kubernetes' standard attribute (since 1.37, `k8s.io/dynamic-resource-allocation`
/// `deviceattribute.StandardDeviceAttributeNUMANode`): the NUMA node of the device, the
/// kernel's `numa_node`, so a claim can align devices of different drivers on one memory
/// controller. Absent where the kernel reports none (-1): a `-1` would match every other
/// device without NUMA affinity. int.
pub const STANDARD_NUMA_NODE: &str = "resource.kubernetes.io/numaNode";

/// The device taint netclaim puts on a published NIC whose link is lost (no carrier, or
/// operationally down while administratively up) or which left the host, and removes
/// when it recovers. Its value says why (`carrier-lost`, `down`, `gone`).
///
/// Link state is not published as attributes: it changes on every flap, and each slice
/// write wakes every pending pod's scheduling in the cluster. It reaches the scheduler as
/// this taint (rate-limited, see the driver's `health` module) and the kubelet through
/// the device health stream.
pub const UNHEALTHY_TAINT_KEY: &str = "netclaim.dev/unhealthy";
/// Multus interop: the device-plugin resource name a NetworkAttachmentDefinition refers to.
pub const MULTUS_RESOURCE_NAME: &str = "k8s.cni.cncf.io/resourceName";
/// Multus interop: the device id (PCI address) Multus hands to the CNI plugin.
pub const MULTUS_DEVICE_ID: &str = "k8s.cni.cncf.io/deviceID";

/// resource.k8s.io/v1: attributes plus capacities per device.
pub const MAX_ATTRIBUTES_PER_DEVICE: usize = 32;
/// resource.k8s.io/v1: entries of a capacity's `requestPolicy.validValues`.
pub const MAX_REQUEST_POLICY_VALID_VALUES: usize = 10;
/// resource.k8s.io/v1: length of a string or version attribute value, in bytes (the API
/// server measures Go string length, which is bytes).
pub const MAX_STRING_VALUE_LEN: usize = 64;
/// resource.k8s.io/v1: devices per ResourceSlice (64 when using taints or counters).
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// resource.k8s.io/v1: devices per ResourceSlice when any of them has taints.
pub const MAX_DEVICES_PER_SLICE_WITH_TAINTS: usize = 64;
/// resource.k8s.io/v1: size of an opaque config's `parameters`, in bytes.
pub const MAX_OPAQUE_PARAMETERS_BYTES: usize = 10 * 1024;
/// Longest C identifier allowed as an attribute name.
pub const MAX_IDENTIFIER_LEN: usize = 32;
/// Longest domain allowed in a qualified attribute name.
pub const MAX_DOMAIN_LEN: usize = 63;
/// Longest DNS label (RFC 1123), which device names must be.
pub const MAX_DNS_LABEL_LEN: usize = 63;

/// `name` in netclaim's domain: `netclaim.dev/ifName`.
pub fn qualified(name: &str) -> String {
    format!("{}/{name}", crate::DRIVER_NAME)
}

/// A C identifier of at most 32 characters: `[A-Za-z_][A-Za-z0-9_]*`.
///
/// # Example
/// ```
/// use netclaim_api::attributes::is_c_identifier;
/// assert!(is_c_identifier("pciAddress"));
/// assert!(!is_c_identifier("1st"));
/// assert!(!is_c_identifier(&"a".repeat(33)));
/// ```
pub fn is_c_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    s.len() <= MAX_IDENTIFIER_LEN
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A lowercase RFC 1123 label of at most 63 characters: `[a-z0-9]([a-z0-9-]*[a-z0-9])?`.
///
/// # Example
/// ```
/// use netclaim_api::attributes::is_dns_label;
/// assert!(is_dns_label("pci-0000-03-00-0"));
/// assert!(!is_dns_label("Eth0"));
/// assert!(!is_dns_label("-eth0"));
/// ```
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    let lower_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.len() <= MAX_DNS_LABEL_LEN
        && lower_alnum(first)
        && lower_alnum(last)
        && bytes.iter().all(|b| lower_alnum(b) || *b == b'-')
}

/// A DNS subdomain as attribute domains must be: dot-separated DNS labels, at most 63
/// characters in all.
fn is_attribute_domain(s: &str) -> bool {
    s.len() <= MAX_DOMAIN_LEN && s.split('.').all(is_dns_label)
}

/// An attribute name as the API accepts it: a C identifier, optionally prefixed by a
/// domain (`resource.kubernetes.io/pcieRoot`).
///
/// # Example
/// ```
/// use netclaim_api::attributes::is_qualified_name;
/// assert!(is_qualified_name("ifName"));
/// assert!(is_qualified_name("k8s.cni.cncf.io/deviceID"));
/// assert!(!is_qualified_name("Example.com/x"));
/// assert!(!is_qualified_name("/x"));
/// ```
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((domain, identifier)) => is_attribute_domain(domain) && is_c_identifier(identifier),
        None => is_c_identifier(s),
    }
}

/// `s` cut to at most [`MAX_STRING_VALUE_LEN`] bytes, at a character boundary so the
/// value stays valid UTF-8.
///
/// # Example
/// ```
/// use netclaim_api::attributes::truncate_value;
/// assert_eq!(truncate_value("eth1"), "eth1");
/// assert_eq!(truncate_value(&"x".repeat(70)).len(), 64);
/// ```
pub fn truncate_value(s: &str) -> String {
    truncate_at_char_boundary(s, MAX_STRING_VALUE_LEN).to_owned()
}

fn truncate_at_char_boundary(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A stable, valid device name (a DNS label) for a NIC.
///
/// - With a PCI address in canonical form (`0000:03:00.0`): `pci-0000-03-00-0`. The
///   name follows the hardware slot, so it survives renames and reboots. Only one netdev
///   per PCI function gets a PCI-based name; callers pass `None` for others (ports sharing
///   a function, representors).
/// - Otherwise the interface name, lowercased, with characters a DNS label cannot hold
///   replaced by `-`. When that changed anything (case included: `ETH0` and `eth0` are
///   different interfaces), had to be cut, or starts like a PCI-based name, a `-` and 8 hex
///   digits of an FNV-1a hash of the original name are appended, so different interfaces
///   never share a name.
///
/// # Example
/// ```
/// use netclaim_api::attributes::device_name_for;
/// assert_eq!(device_name_for("ens3", Some("0000:03:00.0")), "pci-0000-03-00-0");
/// assert_eq!(device_name_for("eth1", None), "eth1");
/// assert!(device_name_for("eth1.100", None).starts_with("eth1-100-"));
/// ```
pub fn device_name_for(if_name: &str, pci_address: Option<&str>) -> String {
    if let Some(name) = pci_address.and_then(pci_device_name) {
        return name;
    }
    interface_device_name(if_name)
}

/// `pci-dddd-bb-dd-f` for a canonical PCI address `dddd:bb:dd.f` (domain of 4 to 8 hex
/// digits), else `None`.
fn pci_device_name(pci: &str) -> Option<String> {
    let (domain, rest) = pci.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let hex_of_len = |s: &str, lens: std::ops::RangeInclusive<usize>| {
        lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let canonical = hex_of_len(domain, 4..=8)
        && hex_of_len(bus, 2..=2)
        && hex_of_len(device, 2..=2)
        && function.len() == 1
        && function.bytes().all(|b| (b'0'..=b'7').contains(&b));
    canonical.then(|| format!("pci-{domain}-{bus}-{device}-{function}").to_ascii_lowercase())
}

const PCI_NAME_PREFIX: &str = "pci-";
/// `-` and eight hex digits.
const HASH_SUFFIX_LEN: usize = 9;

fn interface_device_name(if_name: &str) -> String {
    let sanitized = sanitize_for_dns_label(if_name);
    let needs_hash = sanitized != if_name
        || sanitized.len() > MAX_DNS_LABEL_LEN
        || sanitized.starts_with(PCI_NAME_PREFIX)
        || sanitized.is_empty();
    if !needs_hash {
        return sanitized;
    }
    let base = truncate_at_char_boundary(&sanitized, MAX_DNS_LABEL_LEN - HASH_SUFFIX_LEN)
        .trim_end_matches('-');
    let base = if base.is_empty() { "if" } else { base };
    format!("{base}-{:08x}", fnv1a_32(if_name.as_bytes()))
}

/// Lowercases, maps every other non-`[a-z0-9]` character to `-`, and trims `-` from the
/// ends (a label must start and end with an alphanumeric).
fn sanitize_for_dns_label(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_owned()
}

/// 32-bit FNV-1a: tiny, stable across releases and platforms (unlike std's hasher).
fn fnv1a_32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_vectors() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn pci_names() {
        assert_eq!(
            pci_device_name("0000:03:00.0").as_deref(),
            Some("pci-0000-03-00-0")
        );
        assert_eq!(
            pci_device_name("0000:AF:00.7").as_deref(),
            Some("pci-0000-af-00-7")
        );
        assert_eq!(
            pci_device_name("10000:00:02.0").as_deref(),
            Some("pci-10000-00-02-0")
        );
        for bad in [
            "",
            "0000:03:00",
            "0000:03:00.8",
            "000:03:00.0",
            "0000:03:00.0x",
            "zz:03:00.0",
        ] {
            assert_eq!(pci_device_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = format!("{}é", "x".repeat(63)); // é is two bytes: 65 in all
        assert_eq!(truncate_value(&s), "x".repeat(63));
    }
}
