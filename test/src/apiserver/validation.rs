//! Validation of objects as the real API validates them, on the raw JSON received.
//!
//! Modelled rules (Kubernetes 1.34 `resource.k8s.io/v1`):
//! - every object: `metadata.name` is a DNS subdomain;
//! - ResourceSlice: `spec.driver` a DNS subdomain of at most 63 characters; `spec.pool.name`
//!   non-empty (DNS subdomains joined by `/`); `spec.pool.generation >= 0`;
//!   `spec.pool.resourceSliceCount >= 1`; exactly one of `nodeName`, `nodeSelector`,
//!   `allNodes`, `perDeviceNodeSelection`; `spec.driver` and `spec.nodeName` immutable; at most
//!   128 devices (64 when any device has `taints` or `consumesCounters`); device names DNS
//!   labels, unique in the slice; at most 32 attributes and capacities together per device;
//!   attribute and capacity names qualified names (optional DNS-subdomain domain of at most
//!   63 characters, `/`, a C identifier of at most 32); exactly one of `int`, `bool`,
//!   `string`, `version` per attribute; strings and versions at most 64 characters; versions
//!   semantic versions; taints (`validateDeviceTaint`): at most 4 per device in 1.34, 16
//!   from 1.35, `key` a label name (an optional DNS-subdomain prefix of at most 253
//!   characters and `/`, then a name of at most 63: alphanumerics, `-`, `_`, `.`, starting
//!   and ending alphanumeric), `value` a label value, `effect` `NoSchedule` or `NoExecute`
//!   (and `None` from 1.35);
//! - ResourceSlice consumable capacity (1.34, DRAConsumableCapacity): `allowMultipleAllocations`
//!   a boolean; every capacity `value` a valid quantity; a capacity `requestPolicy` only on a
//!   device with `allowMultipleAllocations: true` (else Forbidden); in a request policy, not
//!   both `validValues` and `validRange`; with `validValues`: `default` required and among
//!   them, at most 10, sorted ascending, unique, none above the capacity `value`; with
//!   `validRange`: `default` and `min` required, `min` and `max` not above the `value`,
//!   `min <= default <= max`, `min <= max`, `min + step` not above the `value`, `default` and
//!   `max` a whole number of `step`s from `min`;
//! - ResourceClaim: `spec` immutable; request names DNS labels, unique;
//! - ResourceClaim status (`ValidateResourceClaimStatusUpdate` in
//!   `pkg/apis/resource/validation/validation.go`): `status.reservedFor` at most 256 entries,
//!   each with `resource`, `name` and `uid`, unique by uid, only with an allocation, and no new
//!   entries once `deletionTimestamp` is set; `status.allocation` immutable once set (it may
//!   only be cleared, which takes `reservedFor` with it); a new allocation: at most 32
//!   results, each naming a request (or `request/subrequest`) of the claim, a valid driver,
//!   pool and device name and a normalized UUID `shareID`, and at most 64 configs with a
//!   `source` of `FromClaim` or `FromClass`, known request names, an opaque driver and
//!   `parameters` a JSON object of at most 10 KiB; `status.devices` entries unique by
//!   (driver, pool, device, shareID), each naming an allocated device (shareID included),
//!   with valid driver, pool, device names and shareID, at most 8 conditions each valid as a
//!   `metav1.Condition` (`ValidateConditions` in `apimachinery/pkg/apis/meta/v1/validation`:
//!   `type` a qualified name, unique; `status` True, False or Unknown; `observedGeneration`
//!   not negative; `lastTransitionTime` set; `reason` set, matching
//!   `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`, at most 1024 bytes; `message` at most 32768
//!   bytes), `data` a JSON object of at most 10 KiB, `networkData.interfaceName` at most
//!   256, at most 16 `ips` each in CIDR form, `hardwareAddress` at most 128;
//! - NetworkAttachmentDefinition: `spec.config`, when set, is a string.
//!
//! Not modelled: CEL selectors, DeviceClass and ResourceClaimTemplate contents, a claim's
//! `spec.devices.config` and constraints, an allocation's `nodeSelector`, tolerations and
//! binding conditions, a `lastTransitionTime` that is not RFC 3339 (the real API fails to
//! decode it: 400, not 422), the admin-access authorization checks, counter
//! arithmetic, capacity accounting across claims (the scheduler's job), quantity syntax
//! outside capacities (beyond "non-empty"); quantities are compared as `f64`, exact for the
//! integers drivers publish.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::gates::ApiServerOptions;
use super::resources::ResourceType;
pub use super::status::FieldError;

/// Most devices in one slice.
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// Most devices in one slice when any device has taints or consumes counters.
pub const MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS: usize = 64;
/// Most attributes and capacities together per device.
pub const MAX_ATTRIBUTES_AND_CAPACITIES: usize = 32;
/// Longest string or version attribute value.
pub const MAX_ATTRIBUTE_VALUE_LENGTH: usize = 64;
/// Largest opaque `status.devices[].data`, in bytes of JSON.
pub const MAX_DEVICE_STATUS_DATA: usize = 10 * 1024;

/// Validates an object about to be stored; `old` is the stored object on updates;
/// `options` the emulated release (some limits differ between releases).
pub(crate) fn validate(
    rtype: &ResourceType,
    object: &Value,
    old: Option<&Value>,
    options: &ApiServerOptions,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = object
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    match name.as_str() {
        Some(n) if is_dns_subdomain(n, 253) => {}
        _ => errors.push(FieldError::invalid(
            "metadata.name",
            &name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        )),
    }
    match rtype.kind {
        "ResourceSlice" => validate_slice(object, old, options, &mut errors),
        "ResourceClaim" => validate_claim(object, old, &mut errors),
        "NetworkAttachmentDefinition" => validate_network_attachment(object, &mut errors),
        "PodNetwork" => validate_pod_network(object, old, &mut errors),
        _ => {}
    }
    errors
}

/// The rules of `examples/install/podnetwork-crd.yaml`'s schema, as the apiextensions
/// server applies them (written out for this one CRD, not a general schema validator):
/// `spec` and `spec.provider` required, the provider 1-253 characters and immutable
/// (`self == oldSelf`), `spec.enabled` a boolean, `spec.parameters` an object, at most 8
/// conditions, each a valid `metav1.Condition`. Defaulting (`spec.enabled: true`) happens
/// before, in [`default_pod_network`].
fn validate_pod_network(object: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(spec) = object.get("spec").filter(|s| s.is_object()) else {
        errors.push(FieldError::required("spec", "Required value"));
        return;
    };
    match spec.get("provider") {
        None => errors.push(FieldError::required("spec.provider", "Required value")),
        Some(Value::String(p)) if p.is_empty() || p.chars().count() > 253 => {
            errors.push(FieldError::invalid(
                "spec.provider",
                &Value::String(p.clone()),
                "should be between 1 and 253 characters long",
            ))
        }
        Some(Value::String(_)) => {}
        Some(other) => errors.push(FieldError::invalid(
            "spec.provider",
            other,
            "must be of type string",
        )),
    }
    if let (Some(old), Some(new)) = (
        old.and_then(|o| o.pointer("/spec/provider")),
        spec.get("provider"),
    ) && old != new
    {
        errors.push(FieldError::invalid(
            "spec.provider",
            new,
            "provider is immutable",
        ));
    }
    if let Some(enabled) = spec.get("enabled")
        && !enabled.is_boolean()
    {
        errors.push(FieldError::invalid(
            "spec.enabled",
            enabled,
            "must be of type boolean",
        ));
    }
    if let Some(parameters) = spec.get("parameters")
        && !parameters.is_object()
    {
        errors.push(FieldError::invalid(
            "spec.parameters",
            parameters,
            "must be of type object",
        ));
    }
    if let Some(conditions) = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
    {
        if conditions.len() > 8 {
            errors.push(FieldError::invalid(
                "status.conditions",
                &Value::from(conditions.len()),
                "must have at most 8 items",
            ));
        }
        validate_conditions(conditions, "status.conditions", errors);
    }
}

/// The CRD schema's defaults: `spec.enabled` is `true` when left out.
pub(crate) fn default_pod_network(object: &mut Value) {
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("enabled").or_insert(Value::Bool(true));
    }
}

// ---- names ---------------------------------------------------------------------------

/// RFC 1123 label: lowercase alphanumerics and '-', alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain of at most `max` characters: labels joined by '.'.
pub fn is_dns_subdomain(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.split('.').all(is_dns_label)
}

/// A C identifier of at most 32 characters.
pub fn is_c_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && s.len() <= 32
}

/// A DRA qualified name: `[domain/]identifier`.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((domain, id)) => is_dns_subdomain(domain, 63) && is_c_identifier(id),
        None => is_c_identifier(s),
    }
}

/// A semantic version (semver 2.0.0, no leading 'v').
pub fn is_semver(s: &str) -> bool {
    let (rest, build) = match s.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let numeric = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    };
    let ident_ok =
        |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let core_parts: Vec<&str> = core.split('.').collect();
    core_parts.len() == 3
        && core_parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|pre| {
            pre.split('.')
                .all(|p| ident_ok(p) && (!p.bytes().all(|b| b.is_ascii_digit()) || numeric(p)))
        })
        && build.is_none_or(|b| b.split('.').all(ident_ok))
}

/// `address/prefix` with an IPv4 or IPv6 address and a prefix in range.
pub fn is_cidr(s: &str) -> bool {
    let Some((address, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

// ---- ResourceSlice -------------------------------------------------------------------

fn validate_slice(
    object: &Value,
    old: Option<&Value>,
    options: &ApiServerOptions,
    errors: &mut Vec<FieldError>,
) {
    let Some(spec) = object.get("spec").and_then(Value::as_object) else {
        errors.push(FieldError::required("spec", ""));
        return;
    };
    let driver = spec.get("driver").cloned().unwrap_or(Value::Null);
    match driver.as_str() {
        None | Some("") => errors.push(FieldError::required("spec.driver", "")),
        Some(d) if !is_dns_subdomain(d, 63) => errors.push(FieldError::invalid(
            "spec.driver",
            &driver,
            "must be a DNS subdomain of at most 63 characters",
        )),
        _ => {}
    }
    validate_pool(spec.get("pool"), errors);
    validate_node_selection(spec, errors);
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        for field in ["driver", "nodeName"] {
            if spec.get(field) != old_spec.get(field) {
                let value = spec.get(field).cloned().unwrap_or(Value::Null);
                errors.push(FieldError::invalid(
                    format!("spec.{field}"),
                    &value,
                    "field is immutable",
                ));
            }
        }
    }
    if let Some(devices) = spec.get("devices") {
        validate_devices(devices, options, errors);
    }
}

fn validate_pool(pool: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(pool) = pool.and_then(Value::as_object) else {
        errors.push(FieldError::required("spec.pool", ""));
        return;
    };
    let name = pool.get("name").cloned().unwrap_or(Value::Null);
    match name.as_str() {
        None | Some("") => errors.push(FieldError::required("spec.pool.name", "")),
        Some(n) if n.len() > 253 || !n.split('/').all(|p| is_dns_subdomain(p, 253)) => {
            errors.push(FieldError::invalid(
                "spec.pool.name",
                &name,
                "must be one or more DNS subdomains separated by slashes",
            ))
        }
        _ => {}
    }
    let generation = pool.get("generation").cloned().unwrap_or(Value::from(0));
    if generation.as_i64().is_none_or(|g| g < 0) {
        errors.push(FieldError::invalid(
            "spec.pool.generation",
            &generation,
            "must be greater than or equal to 0",
        ));
    }
    let count = pool
        .get("resourceSliceCount")
        .cloned()
        .unwrap_or(Value::from(0));
    if count.as_i64().is_none_or(|c| c < 1) {
        errors.push(FieldError::invalid(
            "spec.pool.resourceSliceCount",
            &count,
            "must be greater than zero",
        ));
    }
}

fn validate_node_selection(spec: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    let set = [
        spec.get("nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty()),
        spec.get("nodeSelector").is_some_and(|s| !s.is_null()),
        spec.get("allNodes")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        spec.get("perDeviceNodeSelection")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    ];
    let count = set.iter().filter(|s| **s).count();
    let which = "`nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection`";
    if count == 0 {
        errors.push(FieldError::required(
            "spec",
            format!("exactly one of {which} is required"),
        ));
    } else if count > 1 {
        errors.push(FieldError::invalid(
            "spec",
            &Value::String("{...}".into()),
            format!("exactly one of {which} is required, but multiple fields are set"),
        ));
    }
    if let Some(node) = spec
        .get("nodeName")
        .filter(|n| n.as_str().is_some_and(|n| !n.is_empty()))
        && !node.as_str().is_some_and(|n| is_dns_subdomain(n, 253))
    {
        errors.push(FieldError::invalid(
            "spec.nodeName",
            node,
            "must be a DNS subdomain",
        ));
    }
}

fn validate_devices(devices: &Value, options: &ApiServerOptions, errors: &mut Vec<FieldError>) {
    let Some(devices) = devices.as_array() else {
        errors.push(FieldError::invalid(
            "spec.devices",
            devices,
            "must be a list",
        ));
        return;
    };
    let constrained = devices.iter().any(|d| {
        d.get("taints")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty())
            || d.get("consumesCounters")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty())
    });
    let max = if constrained {
        MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS
    } else {
        MAX_DEVICES_PER_SLICE
    };
    if devices.len() > max {
        errors.push(FieldError::too_many("spec.devices", devices.len(), max));
    }
    let mut seen = HashSet::new();
    for (index, device) in devices.iter().enumerate() {
        let path = format!("spec.devices[{index}]");
        let name = device.get("name").cloned().unwrap_or(Value::Null);
        match name.as_str() {
            None | Some("") => errors.push(FieldError::required(format!("{path}.name"), "")),
            Some(n) if !is_dns_label(n) => errors.push(FieldError::invalid(
                format!("{path}.name"),
                &name,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            )),
            Some(n) => {
                if !seen.insert(n.to_string()) {
                    errors.push(FieldError::duplicate(format!("{path}.name"), &name));
                }
            }
        }
        validate_device_body(device, &path, options, errors);
    }
}

fn validate_device_body(
    device: &Value,
    path: &str,
    options: &ApiServerOptions,
    errors: &mut Vec<FieldError>,
) {
    let attributes = device.get("attributes").and_then(Value::as_object);
    let capacity = device.get("capacity").and_then(Value::as_object);
    let total = attributes.map_or(0, Map::len) + capacity.map_or(0, Map::len);
    if total > MAX_ATTRIBUTES_AND_CAPACITIES {
        errors.push(FieldError::too_many(
            format!("{path}.attributes"),
            total,
            MAX_ATTRIBUTES_AND_CAPACITIES,
        ));
    }
    for (name, value) in attributes.into_iter().flatten() {
        let attr_path = format!("{path}.attributes[{name}]");
        check_qualified_name(name, &attr_path, errors);
        validate_attribute_value(value, &attr_path, errors);
    }
    let multiple = match device.get("allowMultipleAllocations") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            errors.push(FieldError::invalid(
                format!("{path}.allowMultipleAllocations"),
                other,
                "must be a boolean",
            ));
            false
        }
    };
    for (name, value) in capacity.into_iter().flatten() {
        let cap_path = format!("{path}.capacity[{name}]");
        check_qualified_name(name, &cap_path, errors);
        validate_capacity(value, multiple, &cap_path, errors);
    }
    let taints = device.get("taints").and_then(Value::as_array);
    validate_taints(taints.map_or(&[], Vec::as_slice), path, options, errors);
}

/// `resource.DeviceTaintsMaxLength`: 4 in 1.34, 16 from 1.35.
pub fn max_taints_per_device(minor: u32) -> usize {
    if minor >= 35 { 16 } else { 4 }
}

fn validate_taints(
    taints: &[Value],
    path: &str,
    options: &ApiServerOptions,
    errors: &mut Vec<FieldError>,
) {
    let max = max_taints_per_device(options.minor);
    if taints.len() > max {
        errors.push(FieldError::too_many(
            format!("{path}.taints"),
            taints.len(),
            max,
        ));
    }
    // `DeviceTaintEffectNone` exists from 1.35.
    let effects: &[&str] = if options.minor >= 35 {
        &["NoExecute", "NoSchedule", "None"]
    } else {
        &["NoExecute", "NoSchedule"]
    };
    for (index, taint) in taints.iter().enumerate() {
        let taint_path = format!("{path}.taints[{index}]");
        let key = taint.get("key").cloned().unwrap_or(Value::Null);
        match key.as_str() {
            None | Some("") => errors.push(FieldError::required(format!("{taint_path}.key"), "")),
            Some(k) if !is_label_name(k) => errors.push(FieldError::invalid(
                format!("{taint_path}.key"),
                &key,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
                 start and end with an alphanumeric character, with an optional DNS subdomain \
                 prefix and '/'",
            )),
            _ => {}
        }
        if let Some(value) = taint.get("value").filter(|v| !v.is_null())
            && !value.as_str().is_some_and(is_label_value)
        {
            errors.push(FieldError::invalid(
                format!("{taint_path}.value"),
                value,
                "a valid label must be an empty string or consist of alphanumeric characters, \
                 '-', '_' or '.', and must start and end with an alphanumeric character",
            ));
        }
        let effect = taint.get("effect").cloned().unwrap_or(Value::Null);
        match effect.as_str() {
            None | Some("") => {
                errors.push(FieldError::required(format!("{taint_path}.effect"), ""));
            }
            Some(e) if !effects.contains(&e) => errors.push(FieldError::not_supported(
                format!("{taint_path}.effect"),
                &effect,
                effects,
            )),
            _ => {}
        }
    }
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, alphanumeric at both
/// ends.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A label name (`metav1validation.ValidateLabelName`): an optional DNS-subdomain prefix of
/// at most 253 characters and `/`, then a non-empty label value.
pub fn is_label_name(s: &str) -> bool {
    let name = match s.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix, 253) {
                return false;
            }
            name
        }
        None => s,
    };
    !name.is_empty() && is_label_value(name)
}

/// One device capacity: its value, and its request policy (consumable capacity).
fn validate_capacity(capacity: &Value, multiple: bool, path: &str, errors: &mut Vec<FieldError>) {
    let value = match capacity.get("value") {
        None | Some(Value::Null) => {
            errors.push(FieldError::required(format!("{path}.value"), ""));
            None
        }
        Some(v) => quantity_at(v, &format!("{path}.value"), errors),
    };
    let Some(policy) = capacity.get("requestPolicy").filter(|p| !p.is_null()) else {
        return;
    };
    let policy_path = format!("{path}.requestPolicy");
    if !multiple {
        errors.push(FieldError::forbidden(
            policy_path,
            "allowMultipleAllocations must be true",
        ));
        return;
    }
    let Some(value) = value else {
        return;
    };
    let valid_values = policy
        .get("validValues")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty());
    let valid_range = policy.get("validRange").filter(|r| !r.is_null());
    let default_path = format!("{policy_path}.default");
    let default = policy
        .get("default")
        .filter(|d| !d.is_null())
        .map(|d| quantity_at(d, &default_path, errors));
    match (valid_values, valid_range) {
        (Some(_), Some(_)) => errors.push(FieldError::forbidden(
            policy_path,
            r#"exactly one policy can be specified, cannot specify "validValues" and "validRange" at the same time"#,
        )),
        (Some(values), None) => match default {
            None => errors.push(FieldError::required(
                default_path,
                "required when validValues is defined",
            )),
            Some(None) => {}
            Some(Some(default)) => validate_valid_values(
                default,
                value,
                values,
                &format!("{policy_path}.validValues"),
                errors,
            ),
        },
        (None, Some(range)) => match default {
            None => errors.push(FieldError::required(
                default_path,
                "required when validRange is defined",
            )),
            Some(None) => {}
            Some(Some(default)) => validate_valid_range(
                default,
                value,
                range,
                &format!("{policy_path}.validRange"),
                errors,
            ),
        },
        (None, None) => {}
    }
}

/// Most entries of a request policy's `validValues`.
pub const MAX_REQUEST_POLICY_VALID_VALUES: usize = 10;

fn validate_valid_values(
    default: f64,
    capacity: f64,
    values: &[Value],
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if values.len() > MAX_REQUEST_POLICY_VALID_VALUES {
        errors.push(FieldError::too_many(
            path,
            values.len(),
            MAX_REQUEST_POLICY_VALID_VALUES,
        ));
        return;
    }
    let parsed: Vec<Option<f64>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| quantity_at(v, &format!("{path}[{i}]"), errors))
        .collect();
    for i in 1..parsed.len() {
        if let (Some(a), Some(b)) = (parsed[i - 1], parsed[i])
            && a > b
        {
            errors.push(FieldError::invalid(
                format!("{path}[{i}]"),
                &values[i],
                "values must be sorted in ascending order",
            ));
        }
    }
    let mut seen = HashSet::new();
    let mut found_default = false;
    for (i, option) in parsed.iter().enumerate() {
        let Some(option) = *option else { continue };
        if option > capacity {
            errors.push(FieldError::invalid(
                format!("{path}[{i}]"),
                &values[i],
                format!("option is larger than capacity value: {capacity}"),
            ));
        }
        if option == default {
            found_default = true;
        }
        // The real API keys options by their integer value, rounded up.
        if !seen.insert(option.ceil() as i64) {
            errors.push(FieldError::duplicate(format!("{path}[{i}]"), &values[i]));
        }
    }
    if !found_default {
        errors.push(FieldError::invalid(
            path,
            &Value::String(default.to_string()),
            "default value is not valid according to the requestPolicy",
        ));
    }
}

fn validate_valid_range(
    default: f64,
    capacity: f64,
    range: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let field = |name: &str, errors: &mut Vec<FieldError>| {
        range
            .get(name)
            .filter(|v| !v.is_null())
            .map(|v| quantity_at(v, &format!("{path}.{name}"), errors))
    };
    let Some(min) = field("min", errors) else {
        errors.push(FieldError::required(
            format!("{path}.min"),
            "required when validRange is defined",
        ));
        return;
    };
    let (max, step) = (field("max", errors), field("step", errors));
    let Some(min) = min else { return };
    let number = |n: f64| Value::String(n.to_string());
    if min > capacity {
        errors.push(FieldError::invalid(
            format!("{path}.min"),
            &number(min),
            format!("min is larger than capacity value: {capacity}"),
        ));
    }
    if default < min {
        errors.push(FieldError::invalid(
            format!("{path}.min"),
            &number(default),
            format!("default is less than min: {min}"),
        ));
    }
    if let Some(Some(max)) = max {
        if min > max {
            errors.push(FieldError::invalid(
                format!("{path}.max"),
                &number(min),
                format!("min is larger than max: {max}"),
            ));
        }
        if max > capacity {
            errors.push(FieldError::invalid(
                format!("{path}.max"),
                &number(max),
                format!("max is larger than capacity value: {capacity}"),
            ));
        }
        if default > max {
            errors.push(FieldError::invalid(
                format!("{path}.max"),
                &number(default),
                format!("default is more than max: {max}"),
            ));
        }
    }
    if let Some(Some(step)) = step {
        if min + step > capacity {
            errors.push(FieldError::invalid(
                format!("{path}.step"),
                &number(step),
                format!(
                    "one step {} is larger than capacity value: {capacity}",
                    min + step
                ),
            ));
        }
        let mut on_step = |value: f64| {
            let (value, min, step) = (value.ceil() as i64, min.ceil() as i64, step.ceil() as i64);
            if step != 0 && (value - min) % step != 0 {
                errors.push(FieldError::invalid(
                    format!("{path}.step"),
                    &Value::String(value.to_string()),
                    format!("value is not a multiple of a given step ({step}) from ({min})"),
                ));
            }
        };
        on_step(default);
        if let Some(Some(max)) = max {
            on_step(max);
        }
    }
}

/// `value` as a quantity, or an error at `path`.
fn quantity_at(value: &Value, path: &str, errors: &mut Vec<FieldError>) -> Option<f64> {
    let parsed = value.as_str().and_then(parse_quantity);
    if parsed.is_none() {
        errors.push(FieldError::invalid(
            path,
            value,
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ));
    }
    parsed
}

/// A Kubernetes quantity (`1`, `500m`, `2Gi`, `1.5k`, `1e3`) as a number.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty()
        || number.len() - digits.len() > 1
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || digits.bytes().filter(|b| *b == b'.').count() > 1
        || digits == "."
    {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E'])?;
            let exp: i32 = digits.parse().ok()?;
            10f64.powi(exp)
        }
    };
    Some(number * scale)
}

fn check_qualified_name(name: &str, path: &str, errors: &mut Vec<FieldError>) {
    if !is_qualified_name(name) {
        errors.push(FieldError::invalid(
            path,
            &Value::String(name.to_string()),
            "must be a C identifier of at most 32 characters, optionally prefixed by a DNS subdomain of at most 63 characters and '/'",
        ));
    }
}

fn validate_attribute_value(value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let kinds = ["int", "bool", "string", "version"];
    let set: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| value.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    if set.len() != 1 {
        errors.push(FieldError::invalid(
            path,
            value,
            "exactly one value must be specified",
        ));
        return;
    }
    let kind = set[0];
    let inner = &value[kind];
    let type_ok = match kind {
        "int" => inner.is_i64(),
        "bool" => inner.is_boolean(),
        _ => inner.is_string(),
    };
    if !type_ok {
        errors.push(FieldError::invalid(
            format!("{path}.{kind}"),
            inner,
            format!("must be a {kind}"),
        ));
        return;
    }
    if let Some(text) = inner.as_str() {
        if text.len() > MAX_ATTRIBUTE_VALUE_LENGTH {
            errors.push(FieldError::too_long(
                format!("{path}.{kind}"),
                MAX_ATTRIBUTE_VALUE_LENGTH,
            ));
        } else if kind == "version" && !is_semver(text) {
            errors.push(FieldError::invalid(
                format!("{path}.version"),
                inner,
                "must be a string compatible with semver.org spec 2.0.0",
            ));
        }
    }
}

// ---- ResourceClaim -------------------------------------------------------------------

fn validate_claim(object: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    if let Some(old) = old
        && object.get("spec") != old.get("spec")
    {
        errors.push(FieldError::invalid(
            "spec",
            &Value::String("{...}".into()),
            "field is immutable",
        ));
    }
    if let Some(requests) = object
        .pointer("/spec/devices/requests")
        .and_then(Value::as_array)
    {
        let mut seen = HashSet::new();
        for (index, request) in requests.iter().enumerate() {
            let name = request.get("name").cloned().unwrap_or(Value::Null);
            let path = format!("spec.devices.requests[{index}].name");
            match name.as_str() {
                Some(n) if is_dns_label(n) => {
                    if !seen.insert(n.to_string()) {
                        errors.push(FieldError::duplicate(path, &name));
                    }
                }
                _ => errors.push(FieldError::invalid(path, &name, "must be a DNS label")),
            }
        }
    }
    if let Some(status) = object.get("status") {
        let old_status = old.and_then(|o| o.get("status"));
        let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
        let requests = request_names(object);
        validate_claim_status(status, old_status, deleting, &requests, errors);
    }
}

/// The names an allocation result may refer to: each request, and `request/subrequest` for
/// the subrequests of a `firstAvailable` request.
fn request_names(claim: &Value) -> HashSet<String> {
    let mut names = HashSet::new();
    for request in claim
        .pointer("/spec/devices/requests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = text(request, "name");
        for sub in request
            .get("firstAvailable")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            names.insert(format!("{name}/{}", text(sub, "name")));
        }
        names.insert(name);
    }
    names
}

/// Most entries of `status.reservedFor`.
pub const MAX_RESERVED_FOR: usize = 256;
/// Most results of an allocation.
pub const MAX_ALLOCATION_RESULTS: usize = 32;
/// Most conditions of one `status.devices` entry.
pub const MAX_DEVICE_CONDITIONS: usize = 8;
/// Longest condition reason.
pub const MAX_CONDITION_REASON: usize = 1024;
/// Longest condition message.
pub const MAX_CONDITION_MESSAGE: usize = 32 * 1024;
/// Largest opaque configuration parameters, in bytes of JSON.
pub const MAX_OPAQUE_PARAMETERS: usize = 10 * 1024;

/// `ValidateResourceClaimStatusUpdate` (`pkg/apis/resource/validation/validation.go`).
fn validate_claim_status(
    status: &Value,
    old_status: Option<&Value>,
    deleting: bool,
    requests: &HashSet<String>,
    errors: &mut Vec<FieldError>,
) {
    let reserved = status
        .get("reservedFor")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    validate_reserved_for(reserved, errors);
    let allocation = status.get("allocation").filter(|a| !a.is_null());
    let old_allocation = old_status
        .and_then(|s| s.get("allocation"))
        .filter(|a| !a.is_null());
    let allocated: HashSet<String> = allocation
        .and_then(|a| a.pointer("/devices/results"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(super::gates::shared_device_id)
        .collect();
    let mut seen = HashSet::new();
    for (index, entry) in status
        .get("devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("status.devices[{index}]");
        let id = super::gates::shared_device_id(entry);
        validate_device_status(entry, &path, errors);
        if !allocated.contains(&id) {
            errors.push(FieldError::invalid(
                path.clone(),
                &Value::String(id.clone()),
                "must be an allocated device in the claim",
            ));
        }
        if !seen.insert(id.clone()) {
            errors.push(FieldError::duplicate(path, &Value::String(id)));
        }
    }
    if !reserved.is_empty() {
        if allocation.is_none() {
            errors.push(FieldError::forbidden(
                "status.reservedFor",
                "may not be specified when `allocated` is not set",
            ));
        } else if deleting {
            let old_uids: HashSet<&str> = old_status
                .and_then(|s| s.get("reservedFor"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .collect();
            if reserved
                .iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .any(|uid| !old_uids.contains(uid))
            {
                errors.push(FieldError::forbidden(
                    "status.reservedFor",
                    "new entries may not be added while `deallocationRequested` or \
                     `deletionTimestamp` are set",
                ));
            }
        }
    }
    match (allocation, old_allocation) {
        // Updates to a populated allocation are not allowed; clearing it is (together with
        // reservedFor, checked above).
        (Some(new), Some(old)) => {
            if new != old {
                errors.push(FieldError::invalid(
                    "status.allocation",
                    &Value::String("{...}".into()),
                    "field is immutable",
                ));
            }
        }
        (Some(new), None) => validate_allocation(new, requests, errors),
        (None, _) => {}
    }
}

fn validate_reserved_for(reserved: &[Value], errors: &mut Vec<FieldError>) {
    if reserved.len() > MAX_RESERVED_FOR {
        errors.push(FieldError::too_many(
            "status.reservedFor",
            reserved.len(),
            MAX_RESERVED_FOR,
        ));
        return;
    }
    let mut uids = HashSet::new();
    for (index, consumer) in reserved.iter().enumerate() {
        let path = format!("status.reservedFor[{index}]");
        for field in ["resource", "name", "uid"] {
            if text(consumer, field).is_empty() {
                errors.push(FieldError::required(format!("{path}.{field}"), ""));
            }
        }
        let uid = text(consumer, "uid");
        if !uids.insert(uid.clone()) {
            errors.push(FieldError::duplicate(path, &Value::String(uid)));
        }
    }
}

/// `validateAllocationResult`: for a new allocation only (stored ones are immutable).
fn validate_allocation(
    allocation: &Value,
    requests: &HashSet<String>,
    errors: &mut Vec<FieldError>,
) {
    let results = allocation
        .pointer("/devices/results")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if results.len() > MAX_ALLOCATION_RESULTS {
        errors.push(FieldError::too_many(
            "status.allocation.devices.results",
            results.len(),
            MAX_ALLOCATION_RESULTS,
        ));
    } else {
        for (index, result) in results.iter().enumerate() {
            let path = format!("status.allocation.devices.results[{index}]");
            validate_request_ref(
                &text(result, "request"),
                &format!("{path}.request"),
                requests,
                errors,
            );
            validate_driver_name(result.get("driver"), &format!("{path}.driver"), errors);
            validate_pool_name(result.get("pool"), &format!("{path}.pool"), errors);
            let device = result.get("device").cloned().unwrap_or(Value::Null);
            match device.as_str() {
                None | Some("") => errors.push(FieldError::required(format!("{path}.device"), "")),
                Some(name) if !is_dns_label(name) => errors.push(FieldError::invalid(
                    format!("{path}.device"),
                    &device,
                    DNS_LABEL_MESSAGE,
                )),
                Some(_) => {}
            }
            if let Some(share) = result.get("shareID") {
                validate_uid(share, &format!("{path}.shareID"), errors);
            }
        }
    }
    let configs = allocation
        .pointer("/devices/config")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // Class and claim configs together: twice the 32 of one.
    if configs.len() > 64 {
        errors.push(FieldError::too_many(
            "status.allocation.devices.config",
            configs.len(),
            64,
        ));
        return;
    }
    for (index, config) in configs.iter().enumerate() {
        let path = format!("status.allocation.devices.config[{index}]");
        let source = config.get("source").cloned().unwrap_or(Value::Null);
        match source.as_str() {
            None | Some("") => errors.push(FieldError::required(format!("{path}.source"), "")),
            Some("FromClaim" | "FromClass") => {}
            Some(_) => errors.push(FieldError::not_supported(
                format!("{path}.source"),
                &source,
                &["FromClaim", "FromClass"],
            )),
        }
        let mut seen = HashSet::new();
        for (i, request) in config
            .get("requests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let request_path = format!("{path}.requests[{i}]");
            let name = request.as_str().unwrap_or_default();
            validate_request_ref(name, &request_path, requests, errors);
            if !seen.insert(name.to_owned()) {
                errors.push(FieldError::duplicate(request_path, request));
            }
        }
        match config.get("opaque").filter(|o| !o.is_null()) {
            None => errors.push(FieldError::required(format!("{path}.opaque"), "")),
            Some(opaque) => {
                validate_driver_name(
                    opaque.get("driver"),
                    &format!("{path}.opaque.driver"),
                    errors,
                );
                validate_raw_object(
                    opaque.get("parameters"),
                    &format!("{path}.opaque.parameters"),
                    MAX_OPAQUE_PARAMETERS,
                    errors,
                );
            }
        }
    }
}

const DNS_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn validate_request_ref(
    name: &str,
    path: &str,
    requests: &HashSet<String>,
    errors: &mut Vec<FieldError>,
) {
    if !requests.contains(name) {
        errors.push(FieldError::invalid(
            path,
            &Value::String(name.to_owned()),
            "must be the name of a request in the claim or the name of a request and a subrequest separated by '/'",
        ));
    }
}

/// `validateDriverName` (the CSI driver name rules): required, at most 63 characters, a DNS
/// subdomain once lower-cased.
fn validate_driver_name(driver: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) {
    let value = driver.cloned().unwrap_or(Value::Null);
    match value.as_str() {
        None | Some("") => errors.push(FieldError::required(path, "")),
        Some(name) if name.len() > 63 => errors.push(FieldError::too_long(path, 63)),
        Some(name) if !is_dns_subdomain(&name.to_lowercase(), 253) => {
            errors.push(FieldError::invalid(
                path,
                &value,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            ))
        }
        Some(_) => {}
    }
}

/// `validatePoolName`: required, at most 253 characters, DNS subdomains joined by `/`.
fn validate_pool_name(pool: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) {
    let value = pool.cloned().unwrap_or(Value::Null);
    match value.as_str() {
        None | Some("") => errors.push(FieldError::required(path, "")),
        Some(name) if name.len() > 253 => errors.push(FieldError::too_long(path, 253)),
        Some(name) if !name.split('/').all(|part| is_dns_subdomain(part, 253)) => {
            errors.push(FieldError::invalid(
                path,
                &value,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            ))
        }
        Some(_) => {}
    }
}

/// `validateUID`: an RFC 4122 UUID in normalized (lower-case, hyphenated) form.
fn validate_uid(uid: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let normalized = uid.as_str().is_some_and(|u| {
        u.len() == 36
            && u.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
            })
    });
    if !normalized {
        errors.push(FieldError::invalid(
            path,
            uid,
            "uid must be in RFC 4122 normalized form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` with lowercase hexadecimal characters",
        ));
    }
}

/// `validateRawExtension`: present, at most `max` bytes, a JSON object.
fn validate_raw_object(
    value: Option<&Value>,
    path: &str,
    max: usize,
    errors: &mut Vec<FieldError>,
) {
    match value {
        None | Some(Value::Null) => errors.push(FieldError::required(path, "")),
        Some(value) if value.to_string().len() > max => {
            errors.push(FieldError::too_long(path, max));
        }
        Some(Value::Object(_)) => {}
        Some(_) => errors.push(FieldError::invalid_omitted(
            path,
            "must be a valid JSON object",
        )),
    }
}

/// `validateDeviceStatus`, without the allocation check (done by the caller).
fn validate_device_status(entry: &Value, path: &str, errors: &mut Vec<FieldError>) {
    validate_driver_name(entry.get("driver"), &format!("{path}.driver"), errors);
    validate_pool_name(entry.get("pool"), &format!("{path}.pool"), errors);
    let device = entry.get("device").cloned().unwrap_or(Value::Null);
    match device.as_str() {
        None | Some("") => errors.push(FieldError::required(format!("{path}.device"), "")),
        Some(name) if !is_dns_label(name) => errors.push(FieldError::invalid(
            format!("{path}.device"),
            &device,
            DNS_LABEL_MESSAGE,
        )),
        Some(_) => {}
    }
    if let Some(share) = entry.get("shareID") {
        validate_uid(share, &format!("{path}.shareID"), errors);
    }
    let conditions = entry
        .get("conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if conditions.len() > MAX_DEVICE_CONDITIONS {
        errors.push(FieldError::too_many(
            format!("{path}.conditions"),
            conditions.len(),
            MAX_DEVICE_CONDITIONS,
        ));
    }
    validate_conditions(conditions, &format!("{path}.conditions"), errors);
    // `data: null` decodes to no data: the field is optional.
    if let Some(data) = entry.get("data").filter(|d| !d.is_null()) {
        validate_raw_object(
            Some(data),
            &format!("{path}.data"),
            MAX_DEVICE_STATUS_DATA,
            errors,
        );
    }
    let Some(network) = entry.get("networkData") else {
        return;
    };
    if text(network, "interfaceName").len() > 256 {
        errors.push(FieldError::too_long(
            format!("{path}.networkData.interfaceName"),
            256,
        ));
    }
    if text(network, "hardwareAddress").len() > 128 {
        errors.push(FieldError::too_long(
            format!("{path}.networkData.hardwareAddress"),
            128,
        ));
    }
    let ips = network
        .get("ips")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if ips.len() > 16 {
        errors.push(FieldError::too_many(
            format!("{path}.networkData.ips"),
            ips.len(),
            16,
        ));
        return;
    }
    let mut seen = HashSet::new();
    for (index, ip) in ips.iter().enumerate() {
        let ip_path = format!("{path}.networkData.ips[{index}]");
        if !ip.as_str().is_some_and(is_cidr) {
            errors.push(FieldError::invalid(
                ip_path,
                ip,
                "must be a valid address in CIDR form, (e.g. 10.9.8.7/24 or 2001:db8::1/64)",
            ));
        } else if !seen.insert(ip.to_string()) {
            errors.push(FieldError::duplicate(ip_path, ip));
        }
    }
}

// ---- metav1.Condition -------------------------------------------------------------------

const CONDITION_REASON_FORMAT: &str = "[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?";

/// `metav1validation.ValidateConditions` (`apimachinery/pkg/apis/meta/v1/validation`):
/// types unique, then each condition.
pub fn validate_conditions(conditions: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let mut types = HashSet::new();
    for (index, condition) in conditions.iter().enumerate() {
        let item = format!("{path}[{index}]");
        let kind = condition
            .get("type")
            .cloned()
            .unwrap_or(Value::String(String::new()));
        if !types.insert(kind.to_string()) {
            errors.push(FieldError::duplicate(format!("{item}.type"), &kind));
        }
        validate_condition(condition, &item, errors);
    }
}

fn validate_condition(condition: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let kind = text(condition, "type");
    for problem in qualified_name_problems(&kind) {
        errors.push(FieldError::invalid(
            format!("{path}.type"),
            &Value::String(kind.clone()),
            problem,
        ));
    }
    let status = condition
        .get("status")
        .cloned()
        .unwrap_or(Value::String(String::new()));
    if !matches!(status.as_str(), Some("True" | "False" | "Unknown")) {
        errors.push(FieldError::not_supported(
            format!("{path}.status"),
            &status,
            &["False", "True", "Unknown"],
        ));
    }
    if let Some(generation) = condition.get("observedGeneration")
        && generation.as_i64().is_some_and(|g| g < 0)
    {
        errors.push(FieldError::invalid(
            format!("{path}.observedGeneration"),
            generation,
            "must be greater than or equal to zero",
        ));
    }
    if text(condition, "lastTransitionTime").is_empty() {
        errors.push(FieldError::required(
            format!("{path}.lastTransitionTime"),
            "must be set",
        ));
    }
    let reason = text(condition, "reason");
    if reason.is_empty() {
        errors.push(FieldError::required(
            format!("{path}.reason"),
            "must be set",
        ));
    } else {
        if !is_condition_reason(&reason) {
            errors.push(FieldError::invalid(
                format!("{path}.reason"),
                &Value::String(reason.clone()),
                regex_error(
                    "a condition reason must start with alphabetic character, optionally followed by a string of alphanumeric characters or '_,:', and must end with an alphanumeric character or '_'",
                    CONDITION_REASON_FORMAT,
                    &["my_name", "MY_NAME", "MyName", "ReasonA,ReasonB", "ReasonA:ReasonB"],
                ),
            ));
        }
        if reason.len() > MAX_CONDITION_REASON {
            errors.push(FieldError::too_long(
                format!("{path}.reason"),
                MAX_CONDITION_REASON,
            ));
        }
    }
    if text(condition, "message").len() > MAX_CONDITION_MESSAGE {
        errors.push(FieldError::too_long(
            format!("{path}.message"),
            MAX_CONDITION_MESSAGE,
        ));
    }
}

/// `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`
fn is_condition_reason(reason: &str) -> bool {
    let bytes = reason.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphabetic()
        && (bytes.len() == 1 || last.is_ascii_alphanumeric() || *last == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b',' | b':'))
}

/// `validation.RegexError`: the message with examples and the regex.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let mut text = format!("{message} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            text.push_str(" or ");
        }
        text.push_str(&format!("'{example}', "));
    }
    text.push_str(&format!("regex used for validation is '{format}')"));
    text
}

const QUALIFIED_NAME_FORMAT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

/// `validation.IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters matching [`QUALIFIED_NAME_FORMAT`].
fn qualified_name_problems(value: &str) -> Vec<String> {
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return vec!["prefix part must be non-empty".to_owned()];
            }
            if !is_dns_subdomain(prefix, 253) {
                return vec![
                    "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_owned(),
                ];
            }
            name
        }
        _ => {
            return vec![
                regex_error(
                    "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    QUALIFIED_NAME_FORMAT,
                    &["MyName", "my.name", "123-abc"],
                ) + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
            ];
        }
    };
    if name.is_empty() {
        return vec!["name part must be non-empty".to_owned()];
    }
    let mut problems = Vec::new();
    if name.len() > 63 {
        problems.push("name part must be no more than 63 characters".to_owned());
    }
    let bytes = name.as_bytes();
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    let ok = bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        problems.push(regex_error(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            QUALIFIED_NAME_FORMAT,
            &["MyName", "my.name", "123-abc"],
        ));
    }
    problems
}

// ---- NetworkAttachmentDefinition ----------------------------------------------------

/// The CRD's schema: `spec.config`, when present, is a string (a CNI config in JSON).
fn validate_network_attachment(object: &Value, errors: &mut Vec<FieldError>) {
    if let Some(config) = object.pointer("/spec/config")
        && !config.is_string()
    {
        errors.push(FieldError::invalid(
            "spec.config",
            config,
            "must be of type string",
        ));
    }
}

fn text(value: &Value, field: &str) -> String {
    value
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_qualified_name("netclaim.dev/ifName"));
        assert!(is_qualified_name("model"));
        assert!(!is_qualified_name("bad name"));
        assert!(!is_qualified_name("netclaim.dev/1x"));
        assert!(!is_qualified_name(&format!("{}/x", "a".repeat(64))));
        assert!(!is_c_identifier(&"a".repeat(33)));
        assert!(is_semver("1.2.3-rc.1+build.5"));
        assert!(!is_semver("v1.2.3"));
        assert!(!is_semver("1.02.3"));
        assert!(is_cidr("192.0.2.1/24") && is_cidr("2001:db8::1/64"));
        assert!(!is_cidr("192.0.2.1") && !is_cidr("192.0.2.1/33"));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("16"), Some(16.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2Ki"), Some(2048.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        for bad in ["", "x", "1x", "1..2", "--1", "."] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }
}
