//! The ResourceSlice objects a node's devices make, as `netclaim devices -o yaml|json`
//! prints them (the publisher in `kubeletplugin` writes the real ones).

use k8s_openapi::api::resource::v1::{Device, ResourcePool, ResourceSlice, ResourceSliceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::names::MAX_DEVICES_PER_SLICE;

/// Splits `devices` into slices of at most 128 devices of one pool named after the node.
///
/// Slice names are `<node>-<driver>-<index>` with dots replaced, for display; the
/// publisher may name the slices it writes differently. A node without devices still gets
/// one empty slice, so the pool exists and says "no devices" rather than "unknown".
pub fn resource_slices(
    driver: &str,
    node: &str,
    generation: i64,
    devices: &[Device],
) -> Vec<ResourceSlice> {
    let chunks: Vec<&[Device]> = if devices.is_empty() {
        vec![&[]]
    } else {
        devices.chunks(MAX_DEVICES_PER_SLICE).collect()
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
                devices: Some(chunk.to_vec()),
                ..ResourceSliceSpec::default()
            },
        })
        .collect()
}
