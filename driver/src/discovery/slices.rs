//! The ResourceSlice objects a node's devices make, as `netclaim devices -o yaml|json`
//! prints them (the publisher in `kubeletplugin` writes the real ones).

use std::borrow::Borrow;

use k8s_openapi::api::resource::v1::{Device, ResourcePool, ResourceSlice, ResourceSliceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::names::{MAX_DEVICES_PER_SLICE, MAX_DEVICES_PER_SLICE_WITH_TAINTS};

/// Splits `devices` into slices of at most 128 devices (64 when any has a taint, as the API
/// requires) of one pool named after the node.
///
/// Slice names are `<node>-<driver>-<index>` with dots replaced, for display; the
/// publisher may name the slices it writes differently. A node without devices still gets
/// one empty slice, so the pool exists and says "no devices" rather than "unknown".
pub fn resource_slices<D: Borrow<Device>>(
    driver: &str,
    node: &str,
    generation: i64,
    devices: &[D],
) -> Vec<ResourceSlice> {
    let tainted = devices
        .iter()
        .any(|d| d.borrow().taints.as_ref().is_some_and(|t| !t.is_empty()));
    let size = if tainted {
        MAX_DEVICES_PER_SLICE_WITH_TAINTS
    } else {
        MAX_DEVICES_PER_SLICE
    };
    let chunks: Vec<&[D]> = if devices.is_empty() {
        vec![&[]]
    } else {
        devices.chunks(size).collect()
    };
    let count = i64::try_from(chunks.len()).unwrap_or(i64::MAX);
    chunks
        .iter()
        .enumerate()
        .map(|(index, chunk)| ResourceSlice {
            metadata: ObjectMeta {
                name: Some(format!("{node}-{}-{index}", driver.replace('.', "-"))),
                ..ObjectMeta::default()
            },
            spec: ResourceSliceSpec {
                driver: driver.to_owned(),
                node_name: Some(node.to_owned()),
                pool: ResourcePool {
                    name: node.to_owned(),
                    generation,
                    resource_slice_count: count,
                },
                devices: Some(chunk.iter().map(|d| d.borrow().clone()).collect()),
                ..ResourceSliceSpec::default()
            },
        })
        .collect()
}

/// `slices` as YAML documents (`---` before each), with every string value double-quoted.
///
/// Why not plain `serde_yaml`: it writes `pciAddress: 0000:03:00.0` unquoted, which YAML 1.2
/// reads as a string but YAML 1.1 readers (PyYAML, and with it kubernetes-validate and many
/// tools) read as the base-60 number 180.0, so the slice no longer validates. Quoted
/// strings mean the same in both.
pub fn yaml_documents(slices: &[ResourceSlice]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for slice in slices {
        out.push_str("---\n");
        emit_block(&serde_json::to_value(slice)?, 0, &mut out);
    }
    Ok(out)
}

/// Emits a map or list in block style at `indent`; anything else as one line.
fn emit_block(value: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                out.push_str(&pad);
                out.push_str(&yaml_key(key));
                out.push(':');
                emit_value_after_key(value, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The item's first key goes on the `- ` line.
                        let mut nested = String::new();
                        emit_block(item, indent + 2, &mut nested);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&nested[indent + 2..]);
                    }
                    Value::Array(inner) if !inner.is_empty() => {
                        out.push_str(&pad);
                        out.push_str("-\n");
                        emit_block(item, indent + 2, out);
                    }
                    scalar => {
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&yaml_scalar(scalar));
                        out.push('\n');
                    }
                }
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

fn emit_value_after_key(value: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            emit_block(value, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            emit_block(value, indent, out);
        }
        scalar => {
            out.push(' ');
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

/// A scalar (or an empty map or list) on one line: JSON's spelling, which is valid YAML
/// (a double-quoted string with JSON escapes is a YAML double-quoted string).
fn yaml_scalar(value: &serde_json::Value) -> String {
    value.to_string()
}

/// Keys stay plain when they cannot be read as anything but a string, else quoted.
fn yaml_key(key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'))
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        key.to_owned()
    } else {
        serde_json::Value::String(key.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::resource::v1::DeviceAttribute;

    fn device(name: &str, pci: &str) -> Device {
        let attributes = [
            (
                "pciAddress".to_owned(),
                DeviceAttribute {
                    string: Some(pci.to_owned()),
                    ..DeviceAttribute::default()
                },
            ),
            (
                "mtu".to_owned(),
                DeviceAttribute {
                    int: Some(9000),
                    ..DeviceAttribute::default()
                },
            ),
        ];
        Device {
            name: name.to_owned(),
            attributes: Some(attributes.into_iter().collect()),
            ..Device::default()
        }
    }

    #[test]
    fn yaml_quotes_strings_and_reads_back_the_same() {
        let devices = [
            device("pci-0000-03-00-0", "0000:03:00.0"),
            device("on", "yes"),
        ];
        let slices = resource_slices("netclaim.dev", "node-a", 1, &devices);
        let yaml = yaml_documents(&slices).unwrap();
        assert!(yaml.contains("string: \"0000:03:00.0\""), "{yaml}");
        assert!(yaml.contains("int: 9000"), "{yaml}");
        assert!(yaml.contains("- attributes:"), "{yaml}");
        let docs: Vec<serde_json::Value> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        let expected: Vec<serde_json::Value> = slices
            .iter()
            .map(|s| serde_json::to_value(s).unwrap())
            .collect();
        assert_eq!(docs, expected);
    }

    #[test]
    fn a_taint_lowers_the_devices_per_slice_to_64() {
        let mut devices: Vec<Device> = (0..100).map(|i| device(&format!("d{i:03}"), "x")).collect();
        let sizes = |devices: &[Device]| -> Vec<usize> {
            resource_slices("netclaim.dev", "node-a", 1, devices)
                .iter()
                .map(|s| s.spec.devices.as_ref().map_or(0, Vec::len))
                .collect()
        };
        assert_eq!(sizes(&devices), [100]);
        devices[99].taints = Some(vec![k8s_openapi::api::resource::v1::DeviceTaint {
            key: "netclaim.dev/unhealthy".into(),
            value: Some("gone".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }]);
        assert_eq!(sizes(&devices), [64, 36]);
        let slices = resource_slices("netclaim.dev", "node-a", 1, &devices);
        assert!(slices.iter().all(|s| s.spec.pool.resource_slice_count == 2));
    }

    #[test]
    fn ambiguous_keys_are_quoted() {
        assert_eq!(
            yaml_key("resource.kubernetes.io/pcieRoot"),
            "resource.kubernetes.io/pcieRoot"
        );
        assert_eq!(yaml_key("on"), "\"on\"");
        assert_eq!(yaml_key("0000"), "\"0000\"");
    }
}
