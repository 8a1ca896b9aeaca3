//! CNI mode: the `cni` section of a [`crate::NetworkConfig`].
//!
//! In CNI mode netclaim does not configure the claimed interface itself: it runs a CNI
//! network configuration list (inline, or from a Multus `NetworkAttachmentDefinition`)
//! against the pod, and the CNI plugins create and address the interface. The allocated
//! device can be handed to the first plugin as its master / host device ([`CniConfig::device_field`]).
//!
//! # Rules
//! - The network is either inline (`cniVersion`, `name`, `plugins`, all three) or a
//!   `networkAttachmentDefinition` reference, never both.
//! - Only `interface.name` (the interface name inside the pod, `CNI_IFNAME`) may be set
//!   next to `cni`; every other `interface` field is the plugins' job and is refused.
//! - `cniVersion` is one of [`CNI_VERSIONS`]; `name` follows the CNI spec's network-name
//!   rule; each plugin has a `type` that is a bare file name (no `/`, no `..`), also for a
//!   nested `ipam.type`; `name`, `cniVersion` and `prevResult` inside a plugin are refused
//!   (the list's values are injected, as the spec requires).
//! - A DeviceClass config that defines a network decides what claims may change with
//!   `claimMayOverride` (see [`crate::merge`]).

use std::borrow::Cow;
use std::collections::BTreeSet;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ConfigError, Problems};

/// The CNI spec versions netclaim runs: 0.4.0 (CHECK, prevResult on DEL), 1.0.0 and
/// 1.1.0 (STATUS, GC).
pub const CNI_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The most bytes a plugin `type` may have (a file name; Linux `NAME_MAX` is 255).
pub const MAX_PLUGIN_TYPE_LEN: usize = 255;

/// Plugin keys the runtime owns: the list's `name`/`cniVersion` are injected into each
/// plugin, and `prevResult` is the previous plugin's result.
pub const RESERVED_PLUGIN_KEYS: [&str; 3] = ["name", "cniVersion", "prevResult"];

/// The `cni` section: which CNI network to run for the claimed device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CniConfig {
    /// Inline network: the CNI spec version of the list (`0.4.0`, `1.0.0`, `1.1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_version: Option<String>,
    /// Inline network: the network name (`[A-Za-z0-9][A-Za-z0-9_.-]*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Inline network: the plugins, run in order for ADD and in reverse for DEL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<CniPlugin>,
    /// A Multus `NetworkAttachmentDefinition` whose `spec.config` is the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_attachment_definition: Option<NetworkAttachmentReference>,
    /// The field of the first plugin that receives the allocated device's host interface
    /// name; defaults by plugin type ([`default_device_field`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_field: Option<String>,
    /// DeviceClass configs only: what a claim config may override (see [`crate::merge`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_may_override: Vec<CniOverride>,
}

/// What a DeviceClass lets a claim override of the class's CNI setup.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum CniOverride {
    /// `interface.name`: the interface name inside the pod.
    InterfaceName,
    /// The network itself: `cni.cniVersion`/`name`/`plugins` or
    /// `cni.networkAttachmentDefinition`.
    Network,
    /// `cni.deviceField`.
    DeviceField,
}

impl CniOverride {
    /// The name users write in `claimMayOverride`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniOverride::InterfaceName => "interfaceName",
            CniOverride::Network => "network",
            CniOverride::DeviceField => "deviceField",
        }
    }
}

/// A reference to a Multus `NetworkAttachmentDefinition` (`k8s.cni.cncf.io/v1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkAttachmentReference {
    /// Its namespace; defaults to the claim's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

/// One plugin of a CNI network configuration list: `type` plus the plugin's own fields,
/// kept as JSON (plugins define their own keys).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CniPlugin(pub Map<String, Value>);

impl CniPlugin {
    /// The plugin's `type` (its executable's file name), when it is a string.
    pub fn plugin_type(&self) -> Option<&str> {
        self.0.get("type").and_then(Value::as_str)
    }
}

impl JsonSchema for CniPlugin {
    fn schema_name() -> Cow<'static, str> {
        "CniPlugin".into()
    }

    // An open object: plugins define their own fields. Described without `properties`
    // so the schema's "every object with properties is closed" rule keeps holding.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A CNI plugin configuration: `type` (the plugin executable's file name) and the plugin's own fields.",
            "type": "object",
            "required": ["type"]
        })
    }
}

/// A complete CNI network configuration list, as the runtime runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniNetworkList {
    /// The CNI spec version, one of [`CNI_VERSIONS`].
    pub cni_version: String,
    /// The network name.
    pub name: String,
    /// The plugins in ADD order.
    pub plugins: Vec<CniPlugin>,
}

impl CniNetworkList {
    /// Parses and checks a network configuration list (for example a
    /// `NetworkAttachmentDefinition`'s `spec.config`) with the rules of the inline form.
    /// Unknown list-level keys other than `disableCheck`/`disableGC` are refused; a
    /// single-plugin config (with `type` at the top) is accepted as a one-plugin list.
    ///
    /// # Errors
    /// A [`ConfigError`] whose paths start at the list (`plugins[1].type`).
    pub fn parse(raw: &[u8]) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_slice(raw)
            .map_err(|error| ConfigError::single("", format!("not valid JSON: {error}")))?;
        let Value::Object(mut map) = value else {
            return Err(ConfigError::single(
                "",
                "a CNI network config must be an object",
            ));
        };
        let mut problems = Problems::default();
        let mut take_string = |map: &mut Map<String, Value>, key: &str| match map.remove(key) {
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                problems.push(key, "must be a string");
                None
            }
            None => None,
        };
        let cni_version = take_string(&mut map, "cniVersion");
        let name = take_string(&mut map, "name");
        let plugins = if map.contains_key("type") {
            // A single plugin config: everything else belongs to the plugin.
            vec![CniPlugin(std::mem::take(&mut map))]
        } else {
            let plugins = match map.remove("plugins") {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, item)| match item {
                        Value::Object(fields) => Some(CniPlugin(fields)),
                        _ => {
                            problems.push(format!("plugins[{i}]"), "must be an object");
                            None
                        }
                    })
                    .collect(),
                Some(_) => {
                    problems.push("plugins", "must be a list");
                    Vec::new()
                }
                None => Vec::new(),
            };
            map.remove("disableCheck");
            map.remove("disableGC");
            for key in map.keys() {
                problems.push(
                    key.as_str(),
                    "unknown field of a CNI network configuration list",
                );
            }
            plugins
        };
        let config = CniConfig {
            cni_version,
            name,
            plugins,
            ..CniConfig::default()
        };
        let mut checked = Problems::default();
        check_inline_network(&mut checked, "", &config);
        problems.extend_from(checked);
        problems.into_result()?;
        config
            .inline_network()
            .ok_or_else(|| ConfigError::single("", "incomplete network"))
    }

    /// The list as the JSON the CNI spec defines.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "plugins": self.plugins,
        })
    }

    /// Whether this list's spec version is at least `major.minor.patch`.
    pub fn version_at_least(&self, wanted: (u32, u32, u32)) -> bool {
        parse_version(&self.cni_version).is_some_and(|v| v >= wanted)
    }
}

/// The API group of Multus `NetworkAttachmentDefinition`s.
pub const NAD_GROUP: &str = "k8s.cni.cncf.io";
/// The API version of Multus `NetworkAttachmentDefinition`s.
pub const NAD_VERSION: &str = "v1";
/// The kind of a Multus `NetworkAttachmentDefinition`.
pub const NAD_KIND: &str = "NetworkAttachmentDefinition";
/// The resource (plural) name of `NetworkAttachmentDefinition`s in the API.
pub const NAD_PLURAL: &str = "network-attachment-definitions";

impl CniNetworkList {
    /// The network of a `NetworkAttachmentDefinition` object (as JSON, at least its
    /// `spec`): its `spec.config`, a network configuration list or a single plugin config
    /// (run as a one-plugin list, as Multus does), checked by [`CniNetworkList::parse`].
    ///
    /// # Errors
    /// A [`ConfigError`] whose paths start at `spec.config` (`spec.config: plugins[0].type`);
    /// an empty or missing `spec.config` is refused, since netclaim does not read CNI
    /// config files from the node (where Multus would look for a network of that name).
    ///
    /// # Example
    /// ```
    /// use netclaim_api::CniNetworkList;
    /// let nad = serde_json::json!({"spec": {"config":
    ///     r#"{"cniVersion": "1.0.0", "name": "macnet", "type": "macvlan"}"#}});
    /// let list = CniNetworkList::from_network_attachment_definition(&nad).unwrap();
    /// assert_eq!(list.plugins[0].plugin_type(), Some("macvlan"));
    /// ```
    pub fn from_network_attachment_definition(object: &Value) -> Result<Self, ConfigError> {
        match object.get("spec").and_then(|spec| spec.get("config")) {
            Some(Value::String(config)) if !config.trim().is_empty() => {
                Self::parse(config.as_bytes()).map_err(|error| error.in_context("spec.config"))
            }
            None | Some(Value::Null | Value::String(_)) => Err(ConfigError::single(
                "",
                "spec.config is empty (netclaim does not read CNI config files from the node; \
                 put the network configuration in spec.config)",
            )),
            Some(_) => Err(ConfigError::single(
                "spec.config",
                "must be a string holding the CNI network configuration as JSON",
            )),
        }
    }
}

/// Parses `a.b.c` into numbers.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

impl CniConfig {
    /// Whether this section names a network (inline or by reference).
    pub fn has_network(&self) -> bool {
        self.has_inline_network() || self.network_attachment_definition.is_some()
    }

    /// Whether any inline network field is set.
    pub fn has_inline_network(&self) -> bool {
        self.cni_version.is_some() || self.name.is_some() || !self.plugins.is_empty()
    }

    /// The inline network as a list, when all of `cniVersion`, `name` and `plugins` are set.
    pub fn inline_network(&self) -> Option<CniNetworkList> {
        match (&self.cni_version, &self.name, self.plugins.is_empty()) {
            (Some(cni_version), Some(name), false) => Some(CniNetworkList {
                cni_version: cni_version.clone(),
                name: name.clone(),
                plugins: self.plugins.clone(),
            }),
            _ => None,
        }
    }

    /// The plugin field that receives the device: `deviceField`, else the default for
    /// the first plugin's type ([`default_device_field`]); `None` when the network does not
    /// take a device (a bridge, say).
    pub fn effective_device_field(&self) -> Option<String> {
        self.device_field.clone().or_else(|| {
            self.plugins
                .first()
                .and_then(CniPlugin::plugin_type)
                .and_then(default_device_field)
                .map(str::to_owned)
        })
    }

    /// The overrides this (class) config grants, as a set.
    pub fn granted(&self) -> BTreeSet<CniOverride> {
        self.claim_may_override.iter().copied().collect()
    }
}

/// The plugin field that names the host device, by plugin type, as the plugins define it:
/// `master` for macvlan and ipvlan, `device` for host-device, `deviceID` (a PCI address)
/// for sriov.
pub fn default_device_field(plugin_type: &str) -> Option<&'static str> {
    match plugin_type {
        "macvlan" | "ipvlan" => Some("master"),
        "host-device" => Some("device"),
        "sriov" => Some("deviceID"),
        _ => None,
    }
}

/// Checks a plugin `type`: a bare executable name, resolved only inside the configured
/// plugin directories.
///
/// # Errors
/// Why the name could escape the plugin directories or is not a file name.
///
/// # Example
/// ```
/// use netclaim_api::cni::check_plugin_type;
/// assert!(check_plugin_type("host-device").is_ok());
/// assert!(check_plugin_type("../../bin/sh").is_err());
/// assert!(check_plugin_type("/bin/true").is_err());
/// ```
pub fn check_plugin_type(plugin_type: &str) -> Result<(), String> {
    if plugin_type.is_empty() {
        return Err("must not be empty".into());
    }
    if plugin_type.len() > MAX_PLUGIN_TYPE_LEN {
        return Err(format!(
            "is {} bytes; a plugin file name has at most {MAX_PLUGIN_TYPE_LEN}",
            plugin_type.len()
        ));
    }
    if plugin_type.contains('/') || plugin_type.contains('\\') {
        return Err(format!(
            "{plugin_type:?} contains a path separator; give the plugin's file name, found in the CNI plugin directories"
        ));
    }
    if plugin_type.contains("..") || plugin_type == "." {
        return Err(format!(
            "{plugin_type:?} contains '..' or is '.'; give the plugin's file name"
        ));
    }
    if let Some(bad) = plugin_type
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("{plugin_type:?} contains {bad:?}"));
    }
    Ok(())
}

/// Checks a CNI network name against the spec: an alphanumeric first character, then
/// alphanumerics, `_`, `.` or `-`.
///
/// # Errors
/// Why the name breaks the rule.
pub fn check_network_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("must not be empty".into()),
        Some(first) if !first.is_ascii_alphanumeric() => {
            return Err(format!(
                "{name:?} must start with a letter or digit (CNI network names)"
            ));
        }
        Some(_) => {}
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{name:?} contains {bad:?}; CNI network names use letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} must be 1-253 characters"));
    }
    for label in name.split('.') {
        if !crate::attributes::is_dns_label(label) {
            return Err(format!(
                "{name:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.')"
            ));
        }
    }
    Ok(())
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Checks the `cni` section alone (see the [module docs](self) for the rules).
pub(crate) fn check_cni(problems: &mut Problems, path: &str, cni: &CniConfig) {
    if cni.has_inline_network() {
        if let Some(reference) = &cni.network_attachment_definition {
            problems.push(
                join(path, "networkAttachmentDefinition"),
                format!(
                    "{}/{} is given next to an inline network (cniVersion, name, plugins); give one or the other",
                    reference.namespace.as_deref().unwrap_or("<claim namespace>"),
                    reference.name
                ),
            );
        }
        check_inline_network(problems, path, cni);
    }
    if let Some(reference) = &cni.network_attachment_definition {
        let at = join(path, "networkAttachmentDefinition");
        if let Err(message) = check_dns_subdomain(&reference.name) {
            problems.push(join(&at, "name"), message);
        }
        if let Some(namespace) = &reference.namespace
            && !crate::attributes::is_dns_label(namespace)
        {
            problems.push(
                join(&at, "namespace"),
                format!("{namespace:?} is not a valid namespace name (a DNS label)"),
            );
        }
    }
    if let Some(field) = &cni.device_field {
        let at = join(path, "deviceField");
        if field.is_empty() {
            problems.push(at, "must not be empty");
        } else if RESERVED_PLUGIN_KEYS.contains(&field.as_str())
            || field == "type"
            || field == "ipam"
        {
            problems.push(
                at,
                format!("{field:?} is a CNI-defined key; name the plugin's device field (master, device, deviceID)"),
            );
        }
    }
}

/// Checks an inline network: all three fields, a known version, a valid name and plugins.
fn check_inline_network(problems: &mut Problems, path: &str, cni: &CniConfig) {
    match &cni.cni_version {
        None => problems.push(
            join(path, "cniVersion"),
            "an inline network needs cniVersion",
        ),
        Some(version) if !CNI_VERSIONS.contains(&version.as_str()) => problems.push(
            join(path, "cniVersion"),
            format!(
                "{version:?} is not supported; want one of {}",
                CNI_VERSIONS.join(", ")
            ),
        ),
        Some(_) => {}
    }
    match &cni.name {
        None => problems.push(join(path, "name"), "an inline network needs a name"),
        Some(name) => {
            if let Err(message) = check_network_name(name) {
                problems.push(join(path, "name"), message);
            }
        }
    }
    if cni.plugins.is_empty() {
        problems.push(
            join(path, "plugins"),
            "an inline network needs at least one plugin",
        );
    }
    for (index, plugin) in cni.plugins.iter().enumerate() {
        check_plugin(
            problems,
            &format!("{}[{index}]", join(path, "plugins")),
            plugin,
        );
    }
}

fn check_plugin(problems: &mut Problems, at: &str, plugin: &CniPlugin) {
    match plugin.0.get("type") {
        None => problems.push(join(at, "type"), "every plugin needs a type"),
        Some(Value::String(plugin_type)) => {
            if let Err(message) = check_plugin_type(plugin_type) {
                problems.push(join(at, "type"), message);
            }
        }
        Some(_) => problems.push(join(at, "type"), "must be a string"),
    }
    for key in RESERVED_PLUGIN_KEYS {
        if plugin.0.contains_key(key) {
            problems.push(
                join(at, key),
                "is set by the runtime (the list's name and cniVersion, the previous result); remove it",
            );
        }
    }
    // The IPAM plugin is exec'd by the main plugin from CNI_PATH: the same rule applies.
    if let Some(ipam) = plugin.0.get("ipam") {
        match ipam.get("type") {
            Some(Value::String(ipam_type)) => {
                if let Err(message) = check_plugin_type(ipam_type) {
                    problems.push(join(at, "ipam.type"), message);
                }
            }
            Some(_) => problems.push(join(at, "ipam.type"), "must be a string"),
            None => {}
        }
    }
}

impl Problems {
    /// Moves every problem of `other` into `self`.
    pub(crate) fn extend_from(&mut self, other: Problems) {
        if let Err(error) = other.into_result() {
            self.extend(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_types_cannot_escape() {
        for bad in [
            "../../bin/sh",
            "/bin/true",
            "a/b",
            "..",
            ".",
            "x..y",
            "",
            "a b",
            "a\\b",
        ] {
            assert!(check_plugin_type(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["macvlan", "host-device", "sriov", "static", "my_plugin.v2"] {
            assert!(check_plugin_type(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn network_names_follow_the_spec() {
        assert!(check_network_name("net-1_a.b").is_ok());
        assert!(check_network_name("-net").is_err());
        assert!(check_network_name("net/1").is_err());
        assert!(check_network_name("").is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.1.0"), Some((1, 1, 0)));
        assert_eq!(parse_version("1.1"), None);
        assert_eq!(parse_version("1.1.0.1"), None);
    }

    #[test]
    fn a_network_list_parses_with_paths() {
        let list = CniNetworkList::parse(
            br#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan"}, {"type": "tuning"}]}"#,
        )
        .unwrap();
        assert_eq!(list.plugins.len(), 2);
        let error = CniNetworkList::parse(
            br#"{"cniVersion": "9.0.0", "name": "n", "plugins": [{"type": "macvlan"}, {"type": "../x"}], "extra": 1}"#,
        )
        .unwrap_err();
        let paths: Vec<_> = error.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["extra", "cniVersion", "plugins[1].type"], "{error}");
        let single =
            CniNetworkList::parse(br#"{"cniVersion": "0.4.0", "name": "n", "type": "bridge"}"#)
                .unwrap();
        assert_eq!(single.plugins[0].plugin_type(), Some("bridge"));
    }

    fn nad(config: Value) -> Value {
        serde_json::json!({"spec": {"config": config}})
    }

    fn nad_error(config: Value) -> String {
        CniNetworkList::from_network_attachment_definition(&nad(config))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_network_attachment_definition_gives_its_list() {
        let conflist = nad(Value::String(
            r#"{"cniVersion": "1.0.0", "name": "macnet", "plugins": [{"type": "macvlan", "mode": "bridge"}, {"type": "tuning"}]}"#.into(),
        ));
        let list = CniNetworkList::from_network_attachment_definition(&conflist).unwrap();
        assert_eq!(list.name, "macnet");
        assert_eq!(list.cni_version, "1.0.0");
        let types: Vec<_> = list.plugins.iter().map(CniPlugin::plugin_type).collect();
        assert_eq!(types, [Some("macvlan"), Some("tuning")]);

        // A single plugin config becomes a one-plugin list, its fields kept.
        let single = nad(Value::String(
            r#"{"cniVersion": "0.4.0", "name": "ipv", "type": "ipvlan", "ipam": {"type": "static"}}"#.into(),
        ));
        let list = CniNetworkList::from_network_attachment_definition(&single).unwrap();
        assert_eq!(list.name, "ipv");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0].plugin_type(), Some("ipvlan"));
        assert_eq!(list.plugins[0].0["ipam"]["type"], "static");
        assert!(!list.plugins[0].0.contains_key("name"));
    }

    #[test]
    fn a_bad_network_attachment_definition_names_the_spec_config_field() {
        let traversal = nad_error(Value::String(
            r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../x"}]}"#.into(),
        ));
        assert!(
            traversal.starts_with("spec.config: plugins[0].type: "),
            "{traversal}"
        );
        let ipam = nad_error(Value::String(
            r#"{"cniVersion": "1.0.0", "name": "n", "type": "macvlan", "ipam": {"type": "/bin/sh"}}"#.into(),
        ));
        assert!(
            ipam.starts_with("spec.config: plugins[0].ipam.type: "),
            "{ipam}"
        );
        let json = nad_error(Value::String("{not json".into()));
        assert!(json.starts_with("spec.config: not valid JSON: "), "{json}");
        let no_plugins = nad_error(Value::String(
            r#"{"cniVersion": "1.0.0", "name": "n"}"#.into(),
        ));
        assert!(
            no_plugins.contains("spec.config: plugins: "),
            "{no_plugins}"
        );
        let no_type = nad_error(Value::String(
            r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"mode": "bridge"}]}"#.into(),
        ));
        assert!(
            no_type.contains("spec.config: plugins[0].type: "),
            "{no_type}"
        );
        let reserved = nad_error(Value::String(
            r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan", "prevResult": {}}]}"#.into(),
        ));
        assert!(
            reserved.contains("spec.config: plugins[0].prevResult: "),
            "{reserved}"
        );
        let not_string = nad_error(serde_json::json!({"cniVersion": "1.0.0"}));
        assert!(
            not_string.starts_with("spec.config: must be a string"),
            "{not_string}"
        );
        for empty in [
            Value::String(String::new()),
            Value::String(" \n".into()),
            Value::Null,
        ] {
            let error = nad_error(empty);
            assert!(error.starts_with("spec.config is empty"), "{error}");
            assert!(error.contains("does not read CNI config files"), "{error}");
        }
        let no_spec = CniNetworkList::from_network_attachment_definition(&serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(no_spec.starts_with("spec.config is empty"), "{no_spec}");
    }

    #[test]
    fn device_field_defaults_by_type() {
        let mut cni = CniConfig {
            plugins: vec![CniPlugin(
                serde_json::json!({"type": "macvlan"})
                    .as_object()
                    .cloned()
                    .unwrap(),
            )],
            ..Default::default()
        };
        assert_eq!(cni.effective_device_field().as_deref(), Some("master"));
        cni.device_field = Some("dev".into());
        assert_eq!(cni.effective_device_field().as_deref(), Some("dev"));
    }
}
