//! The allocated device, written into the first plugin of a CNI network list.

use netclaim_api::cni::{CniNetworkList, device_fields};
use serde_json::Value;

use super::CniError;

/// The allocated device handed to the first plugin of a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceRef {
    /// Its host interface name (`enp3s0f0`).
    pub ifname: String,
    /// Its PCI address (`0000:03:00.0`), when it is a PCI function.
    pub pci_address: Option<String>,
}

/// Writes the allocated device into the first plugin of `list`.
///
/// The rule: the plugin type's own device field
/// ([`netclaim_api::cni::default_device_field`]: `master` for macvlan/ipvlan, `device`
/// for host-device, `deviceID` for sriov) and the field `device_field` (the config's
/// `cni.deviceField`) when set, both ([`device_fields`]), receive the host interface name,
/// or the PCI address for a `deviceID` field. The type's own field is written whatever
/// `deviceField` says, so no config can point a known plugin at another host device. As
/// Multus does for device-plugin resources, a PCI device's address is also written to
/// `deviceID` when the plugin config has none. A value already in the config is
/// replaced: the allocation decides which device is used. A plugin type with no default
/// and no `device_field` gets nothing (a bridge network).
///
/// # Errors
/// [`CniError::Config`] when the field is `deviceID` and the device has no PCI address.
pub fn substitute_device(
    list: &CniNetworkList,
    device_field: Option<&str>,
    device: &DeviceRef,
) -> Result<CniNetworkList, CniError> {
    let mut list = list.clone();
    let Some(first) = list.plugins.first_mut() else {
        return Ok(list);
    };
    for field in device_fields(first.plugin_type(), device_field) {
        let value = if field == "deviceID" {
            device.pci_address.clone().ok_or_else(|| {
                netclaim_api::ConfigError::single(
                    "cni.deviceField",
                    format!(
                        "deviceID takes a PCI address, and device {} has none",
                        device.ifname
                    ),
                )
            })?
        } else {
            device.ifname.clone()
        };
        first.0.insert(field, Value::String(value));
    }
    if let Some(pci) = &device.pci_address {
        first
            .0
            .entry("deviceID")
            .or_insert_with(|| Value::String(pci.clone()));
    }
    Ok(list)
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(plugins: Value) -> CniNetworkList {
        CniNetworkList::parse(
            json!({"cniVersion": "1.0.0", "name": "net", "plugins": plugins})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn device_substitution_by_type_and_pci() {
        let device = DeviceRef {
            ifname: "enp3s0".into(),
            pci_address: Some("0000:03:00.0".into()),
        };
        let out = substitute_device(
            &list(json!([{"type": "macvlan", "master": "old"}])),
            None,
            &device,
        )
        .unwrap();
        assert_eq!(out.plugins[0].0["master"], "enp3s0");
        assert_eq!(out.plugins[0].0["deviceID"], "0000:03:00.0");
        let out = substitute_device(&list(json!([{"type": "sriov"}])), None, &device).unwrap();
        assert_eq!(out.plugins[0].0["deviceID"], "0000:03:00.0");
        let out = substitute_device(
            &list(json!([{"type": "bridge"}])),
            None,
            &DeviceRef::default(),
        )
        .unwrap();
        assert_eq!(out.plugins[0].0.len(), 1);
        let no_pci = DeviceRef {
            ifname: "veth0".into(),
            pci_address: None,
        };
        let error =
            substitute_device(&list(json!([{"type": "sriov"}])), None, &no_pci).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cni.deviceField: deviceID takes a PCI address"),
            "{error}"
        );
        let out =
            substitute_device(&list(json!([{"type": "x"}])), Some("uplink"), &no_pci).unwrap();
        assert_eq!(out.plugins[0].0["uplink"], "veth0");
        // deviceField cannot steer a known plugin away from the allocated device: its own
        // field is written too.
        let out = substitute_device(
            &list(json!([{"type": "macvlan", "master": "eth0"}])),
            Some("other"),
            &no_pci,
        )
        .unwrap();
        assert_eq!(out.plugins[0].0["master"], "veth0");
        assert_eq!(out.plugins[0].0["other"], "veth0");
    }
}
