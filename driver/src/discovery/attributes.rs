//! Turns what discovery found about a NIC into a `resource.k8s.io/v1` [`Device`] that the
//! API server accepts.
//!
//! Only facts that change rarely are attributes: every attribute change is a slice write,
//! and every slice write re-runs the scheduling of every pending pod that uses DRA. The
//! link's operational state and carrier are therefore not attributes; they feed device
//! health and taints (`crate::health`). The speed is the last one the link reported
//! while it had one (see [`super::sysfs::SysfsCache`]).
//!
//! # Guarantees
//! - Attribute names are valid qualified names; attributes in the driver's domain use the
//!   short name (the domain is implied).
//! - String values are at most 64 bytes: longer ones are cut on a character boundary. The
//!   `ipv4`/`ipv6` lists are cut at the last whole address that fits, never mid-address.
//! - At most 32 attributes and capacities together: when a device would have more, the
//!   lowest-priority attributes are dropped first, in the reverse of the order of
//!   [`ATTRIBUTE_PRIORITY`] (a shared parent's capacity takes one of the 32 places).
//! - A shared parent NIC ([`build_device`] with `shared_children`) has
//!   `allowMultipleAllocations: true`, the `shared` attribute and the capacity
//!   [`CHILDREN`] with a request policy the API accepts (default `1`, `validValues: [1]`):
//!   every allocation consumes exactly one child.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::resource::v1::{
    CapacityRequestPolicy, Device, DeviceAttribute, DeviceCapacity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::names::{self, *};
use super::scan::LinkRecord;
use super::sysfs::SysfsNic;

/// Every attribute discovery may publish, highest priority first. When a device has more
/// attributes than the API allows, attributes are dropped from the end of this list.
pub const ATTRIBUTE_PRIORITY: &[&str] = &[
    IF_NAME,
    TYPE,
    SHARED,
    VIRTUAL,
    PCI_ADDRESS,
    PCIE_ROOT,
    STANDARD_NUMA_NODE,
    MULTUS_RESOURCE_NAME,
    MULTUS_DEVICE_ID,
    MAC,
    MTU,
    NUMA_NODE,
    SRIOV,
    IS_SRIOV_VF,
    SRIOV_VFS,
    PF_NAME,
    VF_INDEX,
    RDMA,
    RDMA_DEVICE,
    KERNEL_DRIVER,
    PCI_VENDOR_ID,
    PCI_DEVICE_ID,
    IPV4,
    IPV6,
    SRIOV_TOTAL_VFS,
    PF_PCI_ADDRESS,
    SPEED,
    ALIAS,
    PCI_SUBSYSTEM_VENDOR_ID,
    PCI_SUBSYSTEM_DEVICE_ID,
    PERM_MAC,
];

/// One NIC: netlink's and sysfs's view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NicRecord {
    /// What netlink reports.
    pub link: LinkRecord,
    /// What sysfs reports.
    pub sysfs: SysfsNic,
}

impl NicRecord {
    /// The stable device name (from the PCI address when there is one).
    pub fn device_name(&self) -> String {
        names::device_name_for(&self.link.name, self.sysfs.pci_address.as_deref())
    }
}

/// Attributes in priority order, before the limits are applied.
pub type AttributeList = Vec<(String, DeviceAttribute)>;

/// Builds the device for `nic`. `multus_resource_name` adds the Multus interop attributes
/// (resource name, and the PCI address as `deviceID` when there is one). With
/// `shared_children`, the device is a shared parent NIC with that many children (see the
/// [module docs](self)).
pub fn build_device(
    nic: &NicRecord,
    multus_resource_name: Option<&str>,
    shared_children: Option<u32>,
) -> Device {
    let mut list = attribute_list(nic, multus_resource_name);
    let Some(children) = shared_children else {
        return Device {
            name: nic.device_name(),
            attributes: Some(apply_limits(list)),
            ..Device::default()
        };
    };
    list.push((
        SHARED.to_owned(),
        DeviceAttribute {
            bool: Some(true),
            ..DeviceAttribute::default()
        },
    ));
    sort_by_priority(&mut list);
    let capacity = BTreeMap::from([(CHILDREN.to_owned(), children_capacity(children))]);
    Device {
        name: nic.device_name(),
        attributes: Some(apply_limits_within(
            list,
            MAX_ATTRIBUTES_PER_DEVICE - capacity.len(),
        )),
        allow_multiple_allocations: Some(true),
        capacity: Some(capacity),
        ..Device::default()
    }
}

/// The [`CHILDREN`] capacity of a shared parent: `children` in all, one per allocation.
///
/// The API's rules for a request policy (resource.k8s.io/v1 validation): `default` is
/// required with `validValues`, must be one of them, and each value must not exceed the
/// capacity's `value`; `validValues` sorted, unique, at most 10. `["1"]` with default `1`
/// satisfies them for every `children >= 1`.
pub fn children_capacity(children: u32) -> DeviceCapacity {
    DeviceCapacity {
        value: Quantity(children.to_string()),
        request_policy: Some(CapacityRequestPolicy {
            default: Some(Quantity("1".to_owned())),
            valid_values: Some(vec![Quantity("1".to_owned())]),
            valid_range: None,
        }),
    }
}

/// Orders `list` as [`ATTRIBUTE_PRIORITY`] (stable; names not in it go last).
fn sort_by_priority(list: &mut AttributeList) {
    let rank = |name: &str| {
        ATTRIBUTE_PRIORITY
            .iter()
            .position(|p| *p == name)
            .unwrap_or(ATTRIBUTE_PRIORITY.len())
    };
    list.sort_by_key(|(name, _)| rank(name));
}

/// The attributes of `nic` in [`ATTRIBUTE_PRIORITY`] order, values not yet limited.
pub fn attribute_list(nic: &NicRecord, multus_resource_name: Option<&str>) -> AttributeList {
    let link = &nic.link;
    let sys = &nic.sysfs;
    let mut list = AttributeList::new();
    let mut put = |name: &str, value: Option<DeviceAttribute>| {
        if let Some(value) = value {
            list.push((name.to_owned(), value));
        }
    };
    put(IF_NAME, string(&link.name));
    put(TYPE, string(link.kind.as_deref().unwrap_or("device")));
    put(VIRTUAL, boolean(sys.is_virtual));
    put(PCI_ADDRESS, sys.pci_address.as_deref().and_then(string));
    put(PCIE_ROOT, sys.pcie_root.as_deref().and_then(string));
    put(STANDARD_NUMA_NODE, sys.numa_node.map(int));
    if let Some(resource_name) = multus_resource_name {
        put(MULTUS_RESOURCE_NAME, string(resource_name));
        put(
            MULTUS_DEVICE_ID,
            sys.pci_address.as_deref().and_then(string),
        );
    }
    put(MAC, link.mac.as_deref().and_then(string));
    put(MTU, Some(int(i64::from(link.mtu))));
    put(NUMA_NODE, sys.numa_node.map(int));
    if sys.pci_address.is_some() {
        put(SRIOV, boolean(sys.is_sriov_pf()));
        put(IS_SRIOV_VF, boolean(sys.is_sriov_vf()));
    }
    put(
        SRIOV_VFS,
        sys.sriov_num_vfs.filter(|_| sys.is_sriov_pf()).map(int),
    );
    put(RDMA, boolean(!sys.rdma_devices.is_empty()));
    put(
        RDMA_DEVICE,
        sys.rdma_devices.first().and_then(|d| string(d)),
    );
    put(KERNEL_DRIVER, sys.kernel_driver.as_deref().and_then(string));
    put(PCI_VENDOR_ID, sys.vendor_id.as_deref().and_then(string));
    put(PCI_DEVICE_ID, sys.device_id.as_deref().and_then(string));
    put(IPV4, address_list(&link.ipv4));
    put(IPV6, address_list(&link.ipv6));
    put(
        SRIOV_TOTAL_VFS,
        sys.sriov_total_vfs.filter(|n| *n > 0).map(int),
    );
    put(
        PF_PCI_ADDRESS,
        sys.pf_pci_address.as_deref().and_then(string),
    );
    put(SPEED, sys.speed_mbps.map(int));
    put(ALIAS, link.alias.as_deref().and_then(string));
    put(
        PCI_SUBSYSTEM_VENDOR_ID,
        sys.subsystem_vendor_id.as_deref().and_then(string),
    );
    put(
        PCI_SUBSYSTEM_DEVICE_ID,
        sys.subsystem_device_id.as_deref().and_then(string),
    );
    let perm_mac = link
        .perm_mac
        .as_ref()
        .filter(|p| link.mac.as_ref() != Some(*p));
    put(PERM_MAC, perm_mac.and_then(|m| string(m)));
    list
}

/// Applies the API's limits: drops invalid names (logged), cuts string values to 64 bytes
/// and keeps the first 32 attributes of the list (the list is in priority order).
pub fn apply_limits(list: AttributeList) -> BTreeMap<String, DeviceAttribute> {
    apply_limits_within(list, MAX_ATTRIBUTES_PER_DEVICE)
}

/// [`apply_limits`] keeping at most `max` attributes: the 32 places are shared with the
/// device's capacities, so a device with capacities has fewer for attributes.
pub fn apply_limits_within(list: AttributeList, max: usize) -> BTreeMap<String, DeviceAttribute> {
    let mut published = BTreeMap::new();
    for (name, mut value) in list {
        if !names::is_qualified_name(&name) {
            tracing::warn!(attribute = %name, "not a valid attribute name; not published");
            continue;
        }
        if published.len() >= max {
            tracing::debug!(attribute = %name, "over the 32 attributes and capacities limit; dropped");
            continue;
        }
        if let Some(s) = value.string.as_mut() {
            *s = names::truncate_value(s);
        }
        published.insert(name, value);
    }
    published
}

/// Comma-separated CIDRs, cut after the last whole entry that fits in 64 bytes.
pub fn address_list(addresses: &[IpNet]) -> Option<DeviceAttribute> {
    let mut joined = String::new();
    for net in addresses {
        let entry = net.to_string();
        let extra = entry.len() + usize::from(!joined.is_empty());
        if joined.len() + extra > MAX_STRING_VALUE_LEN {
            break;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(&entry);
    }
    string(&joined)
}

fn string(value: &str) -> Option<DeviceAttribute> {
    (!value.is_empty()).then(|| DeviceAttribute {
        string: Some(value.to_owned()),
        ..DeviceAttribute::default()
    })
}

fn boolean(value: bool) -> Option<DeviceAttribute> {
    Some(DeviceAttribute {
        bool: Some(value),
        ..DeviceAttribute::default()
    })
}

fn int(value: i64) -> DeviceAttribute {
    DeviceAttribute {
        int: Some(value),
        ..DeviceAttribute::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_list_names_are_valid_and_fit() {
        assert!(ATTRIBUTE_PRIORITY.len() <= MAX_ATTRIBUTES_PER_DEVICE);
        for name in ATTRIBUTE_PRIORITY {
            assert!(names::is_qualified_name(name), "{name}");
        }
    }

    #[test]
    fn address_list_keeps_whole_entries() {
        let nets: Vec<IpNet> = (1..=10)
            .map(|i| format!("192.0.2.{i}/24").parse().unwrap())
            .collect();
        let attr = address_list(&nets).unwrap();
        let s = attr.string.unwrap();
        assert!(s.len() <= 64, "{s}");
        assert!(s.split(',').all(|e| e.parse::<IpNet>().is_ok()), "{s}");
        assert_eq!(address_list(&[]), None);
    }
}
