//! Which Kubernetes the stand-in emulates, and what the registry strategies do with fields of
//! features that are off: they **drop** them on write (no error), unless the stored object
//! already uses them ("ratcheting"), exactly as the real strategies' `dropDisabledFields` do.
//!
//! Modelled gates (defaults from `pkg/features/kube_features.go`):
//! - `DRAConsumableCapacity`: alpha, off, in 1.34 and 1.35; beta, on, from 1.36;
//! - `DRADeviceTaints`: alpha, off, in 1.34 and 1.35; beta, on, in 1.36; GA in 1.37.
//!
//! Sources (kubernetes/kubernetes):
//! - `pkg/registry/resource/resourceslice/strategy.go`, `dropDisabledDRADeviceTaintsFields`:
//!   `spec.devices[].taints`, unless the stored slice has taints;
//! - `pkg/apis/resource/v1/defaults.go`, `SetDefaults_DeviceTaint`: a taint without
//!   `timeAdded` gets the time of the write, in whole seconds (defaulting runs when the
//!   request is decoded, before the strategy drops anything);
//! - `pkg/registry/resource/resourceslice/strategy.go`, `dropDisabledDRAConsumableCapacityFields`:
//!   `spec.devices[].allowMultipleAllocations` and `spec.devices[].capacity[*].requestPolicy`;
//! - `pkg/api/resourceclaimspec` (`DropDisabledFields`, used by the ResourceClaim and
//!   ResourceClaimTemplate strategies): `spec.devices.constraints[].distinctAttribute`,
//!   `spec.devices.requests[].exactly.capacity`, `...firstAvailable[].capacity`;
//! - `pkg/registry/resource/resourceclaim/strategy.go`,
//!   `dropDisabledDRAResourceClaimConsumableCapacityStatusFields`:
//!   `status.allocation.devices.results[].shareID` and `.consumedCapacity`, and
//!   `status.devices[].shareID`; and, gate or not, `dropDeallocatedStatusDevices`: a status
//!   write that takes a device out of the allocation also takes its `status.devices` entry.

use serde_json::Value;

use super::resources::ResourceType;

/// Which Kubernetes the stand-in emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiServerOptions {
    /// The minor version reported by `/version` (major is 1).
    pub minor: u32,
    /// The `DRAConsumableCapacity` feature gate.
    pub dra_consumable_capacity: bool,
    /// The `DRADeviceTaints` feature gate.
    pub dra_device_taints: bool,
}

impl ApiServerOptions {
    /// Kubernetes 1.`minor` with its default gates (`DRAConsumableCapacity` and
    /// `DRADeviceTaints` on from 1.36).
    pub fn kubernetes(minor: u32) -> Self {
        ApiServerOptions {
            minor,
            dra_consumable_capacity: minor >= 36,
            dra_device_taints: minor >= 36,
        }
    }

    /// The same with `DRADeviceTaints` set explicitly (`--feature-gates`).
    pub fn with_dra_device_taints(self, enabled: bool) -> Self {
        ApiServerOptions {
            dra_device_taints: enabled,
            ..self
        }
    }

    /// The same with `DRAConsumableCapacity` set explicitly (`--feature-gates`).
    pub fn with_dra_consumable_capacity(self, enabled: bool) -> Self {
        ApiServerOptions {
            dra_consumable_capacity: enabled,
            ..self
        }
    }
}

impl Default for ApiServerOptions {
    /// Kubernetes 1.34, the oldest release netclaim supports.
    fn default() -> Self {
        ApiServerOptions::kubernetes(34)
    }
}

/// What a create's strategy does before validation.
pub(crate) fn prepare_for_create(
    rtype: &ResourceType,
    object: &mut Value,
    options: &ApiServerOptions,
) {
    prepare(rtype, None, object, None, options);
}

/// What an update's strategy does before validation (`subresource`: `Some("status")` for
/// writes to `/status`).
pub(crate) fn prepare_for_update(
    rtype: &ResourceType,
    subresource: Option<&str>,
    object: &mut Value,
    old: &Value,
    options: &ApiServerOptions,
) {
    prepare(rtype, subresource, object, Some(old), options);
}

fn prepare(
    rtype: &ResourceType,
    subresource: Option<&str>,
    object: &mut Value,
    old: Option<&Value>,
    options: &ApiServerOptions,
) {
    let gate = options.dra_consumable_capacity;
    match (rtype.group, rtype.kind, subresource) {
        ("resource.k8s.io", "ResourceSlice", _) => {
            default_taint_times(object);
            if !options.dra_device_taints && !old.is_some_and(slice_uses_taints) {
                drop_slice_taints(object);
            }
            if !gate && !old.is_some_and(slice_uses_consumable_capacity) {
                drop_slice_fields(object);
            }
        }
        ("resource.k8s.io", "ResourceClaim", Some("status")) => {
            if let Some(old) = old {
                if !gate && !claim_uses_consumable_capacity(old) {
                    drop_claim_status_fields(object);
                }
                drop_deallocated_status_devices(object, old);
            }
        }
        ("resource.k8s.io", "ResourceClaim", None) => {
            let old_spec = old.and_then(|o| o.get("spec"));
            if !gate
                && !old_spec.is_some_and(spec_uses_consumable_capacity)
                && let Some(spec) = object.get_mut("spec")
            {
                drop_spec_fields(spec);
            }
        }
        ("resource.k8s.io", "ResourceClaimTemplate", None) => {
            let old_spec = old.and_then(|o| o.pointer("/spec/spec"));
            if !gate
                && !old_spec.is_some_and(spec_uses_consumable_capacity)
                && let Some(spec) = object.pointer_mut("/spec/spec")
            {
                drop_spec_fields(spec);
            }
        }
        _ => {}
    }
}

fn devices(slice: &Value) -> impl Iterator<Item = &Value> {
    slice
        .pointer("/spec/devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn taints_mut(slice: &mut Value) -> impl Iterator<Item = &mut Value> {
    slice
        .pointer_mut("/spec/devices")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|device| device.get_mut("taints").and_then(Value::as_array_mut))
        .flatten()
}

/// `SetDefaults_DeviceTaint`: the time of the write, in whole seconds.
fn default_taint_times(slice: &mut Value) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    for taint in taints_mut(slice) {
        if let Some(taint) = taint.as_object_mut()
            && taint.get("timeAdded").is_none_or(Value::is_null)
        {
            taint.insert("timeAdded".into(), Value::String(now.clone()));
        }
    }
}

fn slice_uses_taints(slice: &Value) -> bool {
    devices(slice).any(|device| {
        device
            .get("taints")
            .and_then(Value::as_array)
            .is_some_and(|taints| !taints.is_empty())
    })
}

fn drop_slice_taints(slice: &mut Value) {
    let Some(devices) = slice
        .pointer_mut("/spec/devices")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for device in devices.iter_mut().filter_map(Value::as_object_mut) {
        device.remove("taints");
    }
}

fn slice_uses_consumable_capacity(slice: &Value) -> bool {
    devices(slice).any(|device| {
        device.get("allowMultipleAllocations").is_some()
            || device
                .get("capacity")
                .and_then(Value::as_object)
                .is_some_and(|capacity| capacity.values().any(|c| c.get("requestPolicy").is_some()))
    })
}

fn drop_slice_fields(slice: &mut Value) {
    let Some(devices) = slice
        .pointer_mut("/spec/devices")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for device in devices {
        let Some(device) = device.as_object_mut() else {
            continue;
        };
        device.remove("allowMultipleAllocations");
        if let Some(Value::Object(capacity)) = device.get_mut("capacity") {
            for value in capacity.values_mut() {
                if let Some(value) = value.as_object_mut() {
                    value.remove("requestPolicy");
                }
            }
        }
    }
}

fn requests(spec: &Value) -> impl Iterator<Item = &Value> {
    spec.pointer("/devices/requests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn spec_uses_consumable_capacity(spec: &Value) -> bool {
    let distinct = spec
        .pointer("/devices/constraints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c.get("distinctAttribute").is_some());
    distinct
        || requests(spec).any(|request| {
            request.pointer("/exactly/capacity").is_some()
                || request
                    .get("firstAvailable")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|sub| sub.get("capacity").is_some())
        })
}

fn drop_spec_fields(spec: &mut Value) {
    if let Some(constraints) = spec
        .pointer_mut("/devices/constraints")
        .and_then(Value::as_array_mut)
    {
        for constraint in constraints.iter_mut().filter_map(Value::as_object_mut) {
            constraint.remove("distinctAttribute");
        }
    }
    let Some(requests) = spec
        .pointer_mut("/devices/requests")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for request in requests {
        if let Some(Value::Object(exactly)) = request.get_mut("exactly") {
            exactly.remove("capacity");
        }
        if let Some(Value::Array(subrequests)) = request.get_mut("firstAvailable") {
            for sub in subrequests.iter_mut().filter_map(Value::as_object_mut) {
                sub.remove("capacity");
            }
        }
    }
}

fn results(claim: &Value) -> impl Iterator<Item = &Value> {
    claim
        .pointer("/status/allocation/devices/results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn claim_uses_consumable_capacity(claim: &Value) -> bool {
    claim.get("spec").is_some_and(spec_uses_consumable_capacity)
        || results(claim).any(|r| r.get("shareID").is_some() || r.get("consumedCapacity").is_some())
        || claim
            .pointer("/status/devices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|d| d.get("shareID").is_some())
}

fn drop_claim_status_fields(claim: &mut Value) {
    if let Some(results) = claim
        .pointer_mut("/status/allocation/devices/results")
        .and_then(Value::as_array_mut)
    {
        for result in results.iter_mut().filter_map(Value::as_object_mut) {
            result.remove("shareID");
            result.remove("consumedCapacity");
        }
    }
    if let Some(devices) = claim
        .pointer_mut("/status/devices")
        .and_then(Value::as_array_mut)
    {
        for device in devices.iter_mut().filter_map(Value::as_object_mut) {
            device.remove("shareID");
        }
    }
}

/// `driver/pool/device[/shareID]`, as `structured.SharedDeviceID` prints.
pub(crate) fn shared_device_id(entry: &Value) -> String {
    let text = |field: &str| entry.get(field).and_then(Value::as_str).unwrap_or_default();
    let mut id = format!("{}/{}/{}", text("driver"), text("pool"), text("device"));
    if let Some(share) = entry.get("shareID").and_then(Value::as_str) {
        id.push('/');
        id.push_str(share);
    }
    id
}

fn drop_deallocated_status_devices(claim: &mut Value, old: &Value) {
    let still: Vec<String> = results(claim).map(shared_device_id).collect();
    let gone: Vec<String> = results(old)
        .map(shared_device_id)
        .filter(|id| !still.contains(id))
        .collect();
    let Some(status) = claim.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    let emptied = match status.get_mut("devices") {
        Some(Value::Array(devices)) => {
            devices.retain(|device| !gone.contains(&shared_device_id(device)));
            devices.is_empty()
        }
        _ => false,
    };
    if emptied {
        status.remove("devices");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_gates_follow_the_version() {
        assert!(!ApiServerOptions::default().dra_consumable_capacity);
        assert!(!ApiServerOptions::kubernetes(35).dra_consumable_capacity);
        assert!(ApiServerOptions::kubernetes(36).dra_consumable_capacity);
        assert!(!ApiServerOptions::default().dra_device_taints);
        assert!(!ApiServerOptions::kubernetes(35).dra_device_taints);
        assert!(ApiServerOptions::kubernetes(36).dra_device_taints);
        assert!(ApiServerOptions::kubernetes(37).dra_device_taints);
        assert!(
            ApiServerOptions::kubernetes(35)
                .with_dra_device_taints(true)
                .dra_device_taints
        );
        assert!(
            ApiServerOptions::kubernetes(34)
                .with_dra_consumable_capacity(true)
                .dra_consumable_capacity
        );
    }

    fn slice(taints: Value) -> Value {
        json!({"spec": {"devices": [{"name": "a", "taints": taints}, {"name": "b"}]}})
    }

    #[test]
    fn taints_get_a_time_and_are_dropped_without_the_gate() {
        let rtype = super::super::resources::RESOURCES
            .iter()
            .find(|r| r.kind == "ResourceSlice")
            .unwrap();
        let taint = json!([{"key": "example.com/x", "effect": "NoSchedule"}]);
        let mut on = slice(taint.clone());
        prepare_for_create(rtype, &mut on, &ApiServerOptions::kubernetes(36));
        let time = on["spec"]["devices"][0]["taints"][0]["timeAdded"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            chrono::DateTime::parse_from_rfc3339(&time).is_ok(),
            "{time}"
        );
        assert!(!time.contains('.'), "whole seconds: {time}");

        let mut off = slice(taint.clone());
        prepare_for_create(rtype, &mut off, &ApiServerOptions::kubernetes(35));
        assert_eq!(off["spec"]["devices"][0].get("taints"), None);

        // Ratcheting: a stored slice with taints keeps them on update, gate or not.
        let mut update = slice(taint);
        prepare_for_update(
            rtype,
            None,
            &mut update,
            &on,
            &ApiServerOptions::kubernetes(35),
        );
        assert!(update["spec"]["devices"][0]["taints"].is_array());
    }

    #[test]
    fn deallocated_devices_leave_the_status() {
        let old = json!({"status": {"allocation": {"devices": {"results": [
            {"driver": "d", "pool": "p", "device": "a"}, {"driver": "d", "pool": "p", "device": "b"}]}}}});
        let mut new = json!({"status": {
            "allocation": {"devices": {"results": [{"driver": "d", "pool": "p", "device": "a"}]}},
            "devices": [{"driver": "d", "pool": "p", "device": "a"}, {"driver": "d", "pool": "p", "device": "b"}]}});
        drop_deallocated_status_devices(&mut new, &old);
        let devices = new["status"]["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0]["device"], "a");
    }
}
