//! PodNetworks: the SIG Network multi-network API's cluster-scoped custom resource
//! (`multinetwork.networking.k8s.io/v1alpha1`, kind `PodNetwork`), and the parameters
//! netclaim reads from the networks it provides.
//!
//! A PodNetwork names a network pods can be attached to. Its `spec.provider` says which
//! implementation serves it (netclaim serves those naming its driver name, `netclaim.dev`
//! by default); its `spec.parameters` are that provider's business. netclaim's parameters
//! ([`PodNetworkParameters`]) say which of a node's devices belong to the network and may
//! carry the [`NetworkConfig`] claims on the network get. Devices of a Ready network carry
//! the attribute `<driver name>/podNetwork` ([`POD_NETWORK_ATTRIBUTE`]) = the network's
//! name, so a claim or DeviceClass picks a network with
//! `device.attributes["netclaim.dev"].podNetwork == "blue-net"`.
//!
//! The types here are plain data (serde), as the API stores them; the driver wraps
//! [`PodNetwork`] for its client. Field definitions follow the multi-network API's
//! `docs/core-design.md` and its proof of concept (`kubernetes-sigs/multi-network`,
//! `apis/v1alpha1`); the CRD netclaim installs is `examples/install/podnetwork-crd.yaml`.
//!
//! # Parameters
//! Parsed strictly, like an opaque config ([`crate::parse_config`]): unknown fields are
//! refused and every error names its field from the object's root
//! (`spec.parameters.config.interface.mtu: ...`). The network's `config` is admin-owned, as
//! a DeviceClass's config is: claims on the network refine it only where the tenant rules
//! of [`crate::merge`] let them (see [`crate::ConfigSource::Network`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::NetworkConfig;
use crate::error::{ConfigError, Problems};

/// The API group of PodNetworks.
pub const GROUP: &str = "multinetwork.networking.k8s.io";
/// The version netclaim reads and writes.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of PodNetworks.
pub const API_VERSION: &str = "multinetwork.networking.k8s.io/v1alpha1";
/// `kind` of PodNetworks.
pub const KIND: &str = "PodNetwork";
/// The resource's plural name (`/apis/<group>/<version>/podnetworks`).
pub const PLURAL: &str = "podnetworks";

/// The device attribute (in the driver's domain) naming the PodNetwork a device belongs to:
/// `netclaim.dev/podNetwork`, a string, the network's name.
pub const POD_NETWORK_ATTRIBUTE: &str = "podNetwork";

/// The key in `status.devices[].data` naming the PodNetwork a claimed device belongs to.
pub const DEVICE_DATA_KEY: &str = "podNetwork";

/// Condition types netclaim sets on the PodNetworks it provides.
pub mod conditions {
    /// netclaim provides the network and its parameters are valid.
    pub const ACCEPTED: &str = "Accepted";
    /// The network can be used: new pods may be attached to it.
    pub const READY: &str = "Ready";
    /// Some device matches this network and another one: it is in neither (status `True`
    /// while any does).
    pub const CONFLICTED: &str = "Conflicted";
    /// Claims hold devices of this network (status `True` while any does); a network being
    /// deleted stays until none does.
    pub const IN_USE: &str = "InUse";
}

/// Condition reasons netclaim uses.
pub mod reasons {
    /// `Accepted`: the parameters are valid.
    pub const ACCEPTED: &str = "Accepted";
    /// `Accepted`: the parameters are not valid; the message names the field.
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    /// `Ready` is `True`.
    pub const READY: &str = "Ready";
    /// `Ready`: `spec.enabled` is false (the design's reason).
    pub const ADMINISTRATIVELY_DISABLED: &str = "AdministrativelyDisabled";
    /// `Ready`: another condition is not met (the design's reason); the message says which.
    pub const CONDITIONS_NOT_READY: &str = "ConditionsNotReady";
    /// `Conflicted` is `True`: devices match this network and another.
    pub const DEVICES_IN_OTHER_NETWORKS: &str = "DevicesInOtherNetworks";
    /// `Conflicted` is `False`.
    pub const NO_CONFLICTS: &str = "NoConflicts";
    /// `Ready`: the PodNetwork is being deleted (`metadata.deletionTimestamp` is set).
    pub const DELETING: &str = "Deleting";
    /// `InUse` is `True`: claims hold devices of the network; the message names them.
    pub const CLAIMS_HOLD_DEVICES: &str = "ClaimsHoldDevices";
    /// `InUse` is `False`.
    pub const NO_CLAIMS: &str = "NoClaims";
}

/// The finalizer netclaim's condition writer keeps on the PodNetworks of driver `driver`
/// (`netclaim.dev/pod-network-in-use`): a network is not removed while claims hold its
/// devices, so a pod never runs on a network whose object is gone.
pub fn in_use_finalizer(driver: &str) -> String {
    format!("{driver}/pod-network-in-use")
}

/// A PodNetwork as the API serves it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetworkObject {
    /// `multinetwork.networking.k8s.io/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `PodNetwork`.
    #[serde(default)]
    pub kind: String,
    /// The object's metadata, as the API returns it (name, generation, ...).
    #[serde(default)]
    pub metadata: Value,
    /// What the admin asked for.
    #[serde(default)]
    pub spec: PodNetworkSpec,
    /// What the provider reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodNetworkStatus>,
}

/// `spec` of a PodNetwork.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetworkSpec {
    /// Administratively enables the network (default `true`); `false` makes it not Ready.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// The implementation serving the network: a domain-prefixed name that never changes.
    #[serde(default)]
    pub provider: String,
    /// The provider's parameters, free-form in the API (netclaim's: [`PodNetworkParameters`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

fn enabled_by_default() -> bool {
    true
}

impl Default for PodNetworkSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            provider: String::new(),
            parameters: None,
        }
    }
}

/// `status` of a PodNetwork.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetworkStatus {
    /// The conditions, one per type (a `listType=map` list keyed by `type`).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A `metav1.Condition`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type (`Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    #[serde(default)]
    pub reason: String,
    /// What a person reads.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    #[serde(default)]
    pub last_transition_time: String,
}

impl PodNetworkStatus {
    /// The condition of type `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The `spec.parameters` of a PodNetwork netclaim provides.
///
/// At least one of `name` and `devices`; with both, a device must satisfy both.
///
/// # Example
/// ```yaml
/// parameters:
///   devices: device.attributes["netclaim.dev"].pciVendorId == "15b3"
///   config:
///     apiVersion: netclaim.dev/v1alpha1
///     kind: NetworkConfig
///     interface: {mtu: 9000}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodNetworkParameters {
    /// The interface name a node's device has to belong to the network (the multi-network
    /// proof of concept's parameter): `name: dummy0` is `devices:
    /// device.attributes["netclaim.dev"].ifName == "dummy0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    pub name: Option<String>,
    /// A CEL expression over the `device` variable `netclaim run --filter` sees (the device
    /// as published, without `podNetwork`): the devices for which it is true belong to the
    /// network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10240))]
    pub devices: Option<String>,
    /// The configuration claims on this network get, under their DeviceClass's and their
    /// own (admin-owned, like a DeviceClass config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<NetworkConfig>,
}

/// Where netclaim's parameters sit in a PodNetwork: errors name fields from here.
pub const PARAMETERS_PATH: &str = "spec.parameters";

/// Longest `devices` expression accepted (the size the API allows a DeviceClass selector).
pub const MAX_DEVICES_EXPRESSION_BYTES: usize = 10 * 1024;

impl PodNetworkParameters {
    /// Parses and validates `spec.parameters` (`None` when the PodNetwork has none).
    ///
    /// The CEL expression in `devices` is checked for size here; whether it compiles is
    /// checked by the driver, which owns the CEL evaluator.
    ///
    /// # Errors
    /// A [`ConfigError`] whose paths start at `spec.parameters`
    /// (`spec.parameters.config.interface.addresses[0]: ...`).
    ///
    /// # Example
    /// ```
    /// use netclaim_api::podnetwork::PodNetworkParameters;
    /// let parsed = PodNetworkParameters::parse(Some(&serde_json::json!({"name": "dummy0"}))).unwrap();
    /// assert_eq!(parsed.name.as_deref(), Some("dummy0"));
    /// let error = PodNetworkParameters::parse(Some(&serde_json::json!({"nmae": "dummy0"}))).unwrap_err();
    /// assert_eq!(error.errors[0].path, "spec.parameters.nmae");
    /// ```
    pub fn parse(parameters: Option<&Value>) -> Result<Self, ConfigError> {
        let Some(parameters) = parameters else {
            return Err(ConfigError::single(
                PARAMETERS_PATH,
                "required: say which devices belong to the network with `name` (an interface \
                 name) or `devices` (a CEL expression)",
            ));
        };
        let Value::Object(fields) = parameters else {
            return Err(ConfigError::single(PARAMETERS_PATH, "must be an object"));
        };
        let mut rest = fields.clone();
        // The config is parsed on its own, by the same strict parser as opaque configs, so
        // its errors are exactly theirs.
        let config = match rest.remove("config") {
            None | Some(Value::Null) => None,
            Some(config) => {
                let raw = serde_json::to_vec(&config).unwrap_or_default();
                Some(
                    crate::parse_config(&raw)
                        .map_err(|error| prefixed(error, &format!("{PARAMETERS_PATH}.config")))?,
                )
            }
        };
        let selection: Selection =
            serde_path_to_error::deserialize(Value::Object(rest)).map_err(|error| {
                let path = error.path().to_string();
                let path = if path == "." { String::new() } else { path };
                let message = error.inner().to_string();
                let path = match unknown_field(&message) {
                    Some(field) if path.is_empty() => field.to_owned(),
                    _ => path,
                };
                prefixed(ConfigError::single(path, message), PARAMETERS_PATH)
            })?;
        let parsed = Self {
            name: selection.name,
            devices: selection.devices,
            config,
        };
        parsed.validate()?;
        Ok(parsed)
    }

    /// Checks the rules the types cannot say.
    ///
    /// # Errors
    /// Every problem, with paths from `spec.parameters`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        if self.name.is_none() && self.devices.is_none() {
            problems.push(
                PARAMETERS_PATH,
                "say which devices belong to the network: `name` (an interface name) or \
                 `devices` (a CEL expression)",
            );
        }
        if let Some(name) = &self.name
            && let Err(message) = crate::validate::check_interface_name(name)
        {
            problems.push(format!("{PARAMETERS_PATH}.name"), message);
        }
        if let Some(devices) = &self.devices {
            if devices.trim().is_empty() {
                problems.push(
                    format!("{PARAMETERS_PATH}.devices"),
                    "must not be empty: a CEL expression over `device`",
                );
            } else if devices.len() > MAX_DEVICES_EXPRESSION_BYTES {
                problems.push(
                    format!("{PARAMETERS_PATH}.devices"),
                    format!(
                        "the expression is {} bytes; at most {MAX_DEVICES_EXPRESSION_BYTES}",
                        devices.len()
                    ),
                );
            }
        }
        if let Some(config) = &self.config {
            let path = format!("{PARAMETERS_PATH}.config");
            if let Err(error) = config.validate() {
                problems.extend(prefixed(error, &path));
            }
            if let Some(cni) = &config.cni {
                if !cni.plugin_overrides.is_empty() {
                    problems.push(
                        format!("{path}.cni.pluginOverrides"),
                        "only claim configs set pluginOverrides; a network writes its \
                         fields in the network itself",
                    );
                }
                if let Some(reference) = &cni.network_attachment_definition
                    && reference.namespace.is_none()
                {
                    problems.push(
                        format!("{path}.cni.networkAttachmentDefinition.namespace"),
                        "required in a PodNetwork: the network is cluster-scoped, so there \
                         is no namespace to default to",
                    );
                }
            }
        }
        problems.into_result()
    }

    /// The CEL expression selecting the network's devices: `devices`, and `name` as an
    /// `ifName` test, joined with `&&` when both are set. `driver` is the attribute domain.
    pub fn selector(&self, driver: &str) -> String {
        let by_name = self.name.as_ref().map(|name| {
            format!(
                "device.attributes[{}].{} == {}",
                quote(driver),
                crate::attributes::IF_NAME,
                quote(name)
            )
        });
        match (by_name, &self.devices) {
            (Some(by_name), Some(devices)) => format!("({by_name}) && ({devices})"),
            (Some(by_name), None) => by_name,
            (None, Some(devices)) => devices.clone(),
            (None, None) => "false".to_owned(),
        }
    }
}

/// The part of the parameters other than `config`, deserialized strictly.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Selection {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    devices: Option<String>,
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
}

fn prefixed(mut error: ConfigError, prefix: &str) -> ConfigError {
    for problem in &mut error.errors {
        problem.path = if problem.path.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", problem.path)
        };
    }
    error
}

/// A CEL string literal of `text` (JSON string escaping is valid CEL).
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The JSON Schema of [`PodNetworkParameters`] (committed as
/// `api/schema/podnetwork-parameters.schema.json`).
pub fn parameters_schema() -> Value {
    schemars::schema_for!(PodNetworkParameters).to_value()
}

/// The schema as the committed file holds it: pretty JSON ending in a newline.
pub fn parameters_schema_text() -> String {
    let pretty = serde_json::to_string_pretty(&parameters_schema()).unwrap_or_default();
    format!("{pretty}\n")
}

/// The condition types and their status for one PodNetwork, computed by the condition
/// writer from the spec and what it knows; [`desired_conditions`] turns them into
/// conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `Err(message)` when the parameters are invalid (the message names the field).
    pub accepted: Result<(), String>,
    /// `spec.enabled`.
    pub enabled: bool,
    /// Devices that match this network and others, as `node: device (also: other, ...)`.
    pub conflicts: Vec<String>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The claims holding devices of this network, as `namespace/name`.
    pub users: Vec<String>,
}

/// Condition messages stay under this many bytes (the API's limit is 32768).
const MAX_MESSAGE: usize = 4096;

/// `message` cut at [`MAX_MESSAGE`] bytes (on a character boundary), ending in ` ...` when
/// cut.
fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" ...");
    }
    message
}

/// The conditions a [`Verdict`] gives, keeping each unchanged condition's
/// `lastTransitionTime` from `current` (`now` for the others), at `generation`.
pub fn desired_conditions(
    verdict: &Verdict,
    current: Option<&PodNetworkStatus>,
    generation: i64,
    now: &str,
) -> Vec<Condition> {
    let mut wanted: Vec<(&str, bool, &str, String)> = Vec::new();
    match &verdict.accepted {
        Ok(()) => wanted.push((
            conditions::ACCEPTED,
            true,
            reasons::ACCEPTED,
            "netclaim provides this network; its parameters are valid".to_owned(),
        )),
        Err(message) => wanted.push((
            conditions::ACCEPTED,
            false,
            reasons::INVALID_PARAMETERS,
            message.clone(),
        )),
    }
    let ready = match (&verdict.accepted, verdict.enabled) {
        _ if verdict.deleting => (
            false,
            reasons::DELETING,
            "the PodNetwork is being deleted: devices of this network are withdrawn from new \
             claims"
                .to_owned(),
        ),
        (_, false) => (
            false,
            reasons::ADMINISTRATIVELY_DISABLED,
            "spec.enabled is false: devices of this network are withdrawn from new claims"
                .to_owned(),
        ),
        (Err(message), true) => (
            false,
            reasons::CONDITIONS_NOT_READY,
            format!("Accepted is False: {message}"),
        ),
        (Ok(()), true) => (
            true,
            reasons::READY,
            "devices matching the network carry the podNetwork attribute".to_owned(),
        ),
    };
    wanted.push((conditions::READY, ready.0, ready.1, ready.2));
    if verdict.conflicts.is_empty() {
        wanted.push((
            conditions::CONFLICTED,
            false,
            reasons::NO_CONFLICTS,
            "no device matches this network and another".to_owned(),
        ));
    } else {
        let message = format!(
            "{} device(s) match this network and another, and are in neither: {}",
            verdict.conflicts.len(),
            verdict.conflicts.join("; ")
        );
        wanted.push((
            conditions::CONFLICTED,
            true,
            reasons::DEVICES_IN_OTHER_NETWORKS,
            bounded(message),
        ));
    }
    if verdict.users.is_empty() {
        let message = if verdict.deleting {
            "no claim holds a device of this network: it is removed now"
        } else {
            "no claim holds a device of this network"
        };
        wanted.push((
            conditions::IN_USE,
            false,
            reasons::NO_CLAIMS,
            message.to_owned(),
        ));
    } else {
        let mut message = format!(
            "{} claim(s) hold devices of this network: {}",
            verdict.users.len(),
            verdict.users.join(", ")
        );
        if verdict.deleting {
            message.insert_str(0, "the deletion waits until no claim holds its devices; ");
        }
        wanted.push((
            conditions::IN_USE,
            true,
            reasons::CLAIMS_HOLD_DEVICES,
            bounded(message),
        ));
    }
    let previous: BTreeMap<&str, &Condition> = current
        .map(|status| {
            status
                .conditions
                .iter()
                .map(|c| (c.type_.as_str(), c))
                .collect()
        })
        .unwrap_or_default();
    wanted
        .into_iter()
        .map(|(type_, status, reason, message)| {
            let status = if status { "True" } else { "False" };
            let since = previous
                .get(type_)
                .filter(|c| c.status == status && !c.last_transition_time.is_empty())
                .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation: Some(generation),
                last_transition_time: since,
            }
        })
        .collect()
}

/// Whether a PodNetwork may be used now, as a node agent decides it: not being deleted
/// (without waiting for the controller to say so), enabled, and its `Ready` condition is
/// `True` for the current generation (a condition for an older generation describes a spec
/// that no longer exists).
pub fn is_ready(network: &PodNetworkObject) -> Result<(), String> {
    if network
        .metadata
        .get("deletionTimestamp")
        .is_some_and(|since| !since.is_null())
    {
        return Err(format!(
            "{}: the PodNetwork is being deleted",
            reasons::DELETING
        ));
    }
    if !network.spec.enabled {
        return Err(format!(
            "{}: spec.enabled is false",
            reasons::ADMINISTRATIVELY_DISABLED
        ));
    }
    let generation = network.metadata.get("generation").and_then(Value::as_i64);
    let ready = network
        .status
        .as_ref()
        .and_then(|status| status.condition(conditions::READY));
    match ready {
        None => Err("no Ready condition yet (is `netclaim controller` running?)".to_owned()),
        Some(ready) if ready.status != "True" => {
            Err(format!("{}: {}", ready.reason, ready.message))
        }
        Some(ready) if generation.is_some() && ready.observed_generation != generation => {
            Err(format!(
                "Ready is for generation {}, the spec is at {}: waiting for the controller",
                ready.observed_generation.unwrap_or_default(),
                generation.unwrap_or_default()
            ))
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<PodNetworkParameters, ConfigError> {
        PodNetworkParameters::parse(Some(&value))
    }

    #[test]
    fn errors_name_the_field_from_the_object_root() {
        let error = parse(json!({"name": "dummy0", "config": {
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "interface": {"addresses": ["192.0.2.300/24"]}}}))
        .unwrap_err();
        assert_eq!(
            error.errors[0].path,
            "spec.parameters.config.interface.addresses[0]"
        );
        let error = parse(json!({"devices": 5})).unwrap_err();
        assert_eq!(error.errors[0].path, "spec.parameters.devices");
        let error = parse(json!({})).unwrap_err();
        assert_eq!(error.errors[0].path, "spec.parameters");
        let error = PodNetworkParameters::parse(None).unwrap_err();
        assert_eq!(error.errors[0].path, "spec.parameters");
        let error = parse(json!({"name": "a name too long for linux"})).unwrap_err();
        assert_eq!(error.errors[0].path, "spec.parameters.name");
    }

    #[test]
    fn a_network_config_is_admin_shaped() {
        let error = parse(json!({"name": "x", "config": {
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "cni": {"networkAttachmentDefinition": {"name": "macnet"},
                    "pluginOverrides": {"plugins[0].mode": "vepa"}}}}))
        .unwrap_err();
        let paths: Vec<_> = error.errors.iter().map(|e| e.path.as_str()).collect();
        assert!(
            paths.contains(&"spec.parameters.config.cni.pluginOverrides"),
            "{error}"
        );
        assert!(
            paths.contains(&"spec.parameters.config.cni.networkAttachmentDefinition.namespace"),
            "{error}"
        );
    }

    #[test]
    fn a_claim_refines_the_network_only_where_allowed() {
        use crate::{ConfigSource, SourcedConfig, merge_configs};
        let network = parse(json!({"name": "eth1", "config": {
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "cni": {"cniVersion": "1.0.0", "name": "blue", "plugins": [{"type": "macvlan"}],
                    "claimMayOverride": ["interfaceName"]}}}))
        .unwrap();
        let sourced = |source, config: Value| {
            SourcedConfig::parse(source, vec![], 0, config.to_string().as_bytes()).unwrap()
        };
        let network = SourcedConfig {
            source: ConfigSource::Network,
            requests: vec![],
            index: 0,
            config: network.config.unwrap(),
        };
        let claim = |interface: Value| {
            sourced(
                ConfigSource::Claim,
                json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
                       "interface": interface}),
            )
        };
        let merged = merge_configs(&[claim(json!({"name": "blue0"})), network.clone()]).unwrap();
        assert_eq!(merged.interface.name.as_deref(), Some("blue0"));
        assert_eq!(merged.cni.unwrap().name.as_deref(), Some("blue"));
        let error = merge_configs(&[claim(json!({"mtu": 9000})), network]).unwrap_err();
        assert_eq!(error.errors[0].path, "claim config[0]: interface.mtu");
        assert!(
            error.errors[0].message.contains("defines the CNI network"),
            "{error}"
        );
    }

    #[test]
    fn the_selector_joins_name_and_devices() {
        let both = parse(
            json!({"name": "eth1", "devices": "device.attributes[\"netclaim.dev\"].mtu > 1500"}),
        )
        .unwrap();
        assert_eq!(
            both.selector("netclaim.dev"),
            r#"(device.attributes["netclaim.dev"].ifName == "eth1") && (device.attributes["netclaim.dev"].mtu > 1500)"#
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let verdict = Verdict {
            accepted: Ok(()),
            enabled: true,
            conflicts: vec![],
            deleting: false,
            users: vec![],
        };
        let first = desired_conditions(&verdict, None, 1, "t1");
        assert!(first.iter().all(|c| c.last_transition_time == "t1"));
        let status = PodNetworkStatus { conditions: first };
        let disabled = Verdict {
            enabled: false,
            ..verdict
        };
        let second = desired_conditions(&disabled, Some(&status), 2, "t2");
        let ready = second.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.last_transition_time.as_str()
            ),
            ("False", "AdministrativelyDisabled", "t2")
        );
        let accepted = second.iter().find(|c| c.type_ == "Accepted").unwrap();
        assert_eq!(accepted.last_transition_time, "t1");
        assert_eq!(accepted.observed_generation, Some(2));
    }

    #[test]
    fn readiness_needs_the_current_generation() {
        let mut network: PodNetworkObject = serde_json::from_value(json!({
            "metadata": {"name": "blue", "generation": 2},
            "spec": {"provider": "netclaim.dev", "parameters": {"name": "eth1"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                "message": "", "observedGeneration": 1, "lastTransitionTime": "t"}]}
        }))
        .unwrap();
        assert!(network.spec.enabled, "enabled defaults to true");
        assert!(is_ready(&network).unwrap_err().contains("generation 1"));
        network.metadata["generation"] = json!(1);
        assert_eq!(is_ready(&network), Ok(()));
        network.spec.enabled = false;
        assert!(
            is_ready(&network)
                .unwrap_err()
                .starts_with("AdministrativelyDisabled")
        );
        network.spec.enabled = true;
        network.metadata["deletionTimestamp"] = json!("2026-12-02T00:00:00Z");
        assert!(is_ready(&network).unwrap_err().starts_with("Deleting"));
    }

    fn condition<'a>(conditions: &'a [Condition], type_: &str) -> (&'a str, &'a str, &'a str) {
        let found = conditions.iter().find(|c| c.type_ == type_).unwrap();
        (&found.status, &found.reason, &found.message)
    }

    #[test]
    fn in_use_names_the_claims_and_a_deletion_waits_for_them() {
        let used = Verdict {
            accepted: Ok(()),
            enabled: true,
            conflicts: vec![],
            deleting: false,
            users: vec!["team-a/web-nic".into(), "team-b/db-nic".into()],
        };
        let got = desired_conditions(&used, None, 1, "t");
        let (status, reason, message) = condition(&got, conditions::IN_USE);
        assert_eq!((status, reason), ("True", reasons::CLAIMS_HOLD_DEVICES));
        assert_eq!(
            message,
            "2 claim(s) hold devices of this network: team-a/web-nic, team-b/db-nic"
        );
        assert_eq!(condition(&got, conditions::READY).0, "True");

        let deleting = Verdict {
            deleting: true,
            ..used.clone()
        };
        let got = desired_conditions(&deleting, None, 1, "t");
        let (status, reason, message) = condition(&got, conditions::IN_USE);
        assert_eq!((status, reason), ("True", reasons::CLAIMS_HOLD_DEVICES));
        assert!(message.starts_with("the deletion waits"), "{message}");
        assert!(message.ends_with("team-b/db-nic"), "{message}");
        assert_eq!(
            condition(&got, conditions::READY).1,
            reasons::DELETING,
            "a network being deleted takes no new claims, enabled or not"
        );

        let free = Verdict {
            users: vec![],
            ..used
        };
        let got = desired_conditions(&free, None, 1, "t");
        let (status, reason, _) = condition(&got, conditions::IN_USE);
        assert_eq!((status, reason), ("False", reasons::NO_CLAIMS));
    }

    #[test]
    fn a_long_user_list_is_cut_on_a_character_boundary() {
        let verdict = Verdict {
            accepted: Ok(()),
            enabled: true,
            conflicts: vec![],
            deleting: false,
            users: (0..1000).map(|i| format!("ns-é/claim-{i}")).collect(),
        };
        let got = desired_conditions(&verdict, None, 1, "t");
        let message = condition(&got, conditions::IN_USE).2;
        assert!(message.len() <= MAX_MESSAGE + 4, "{}", message.len());
        assert!(message.ends_with(" ..."));
    }
}
