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
//! - A DeviceClass config decides what claims may change: `claimMayOverride` (the
//!   interface name, `deviceField`, fields of the class network's plugins by path) and
//!   `claimMayBring` (whether a claim may give its own network, inline or as a
//!   `NetworkAttachmentDefinition`, and from which namespaces); see [`crate::merge`] and
//!   [`crate::policy`], which also holds what claims may never set and the plugin
//!   allowlist.
//! - A list has at most [`crate::policy::MAX_PLUGINS`] plugins.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::attributes::MAX_OPAQUE_PARAMETERS_BYTES;
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
    /// DeviceClass configs only: the networks a claim may bring itself. Absent: none, the
    /// class's network (or no CNI network at all) is what claims get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_may_bring: Option<ClaimMayBring>,
    /// Claim configs only: values for fields of the network's plugins, keyed by path
    /// (`plugins[0].ipam.addresses`); each path must be one the DeviceClass lists in
    /// `claimMayOverride` (or lie under one). A value replaces the field whole.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_overrides: BTreeMap<String, Value>,
}

/// What a DeviceClass lets a claim override of the class's CNI setup: `interfaceName`,
/// `deviceField`, or a field of one of the network's plugins by path
/// (`plugins[0].ipam.addresses`; everything under it too).
///
/// Written as a string in `claimMayOverride`. The former `network` entry is refused with a
/// pointer to [`ClaimMayBring`], which says which networks a claim may bring.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CniOverride {
    /// `interface.name`: the interface name inside the pod.
    InterfaceName,
    /// `cni.deviceField`.
    DeviceField,
    /// A field of a plugin of the network, set by the claim in `cni.pluginOverrides`.
    PluginField(PluginFieldPath),
}

impl CniOverride {
    /// The name users write in `claimMayOverride`.
    pub fn as_string(&self) -> String {
        match self {
            CniOverride::InterfaceName => "interfaceName".to_owned(),
            CniOverride::DeviceField => "deviceField".to_owned(),
            CniOverride::PluginField(path) => path.to_string(),
        }
    }
}

impl fmt::Display for CniOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

impl From<CniOverride> for String {
    fn from(value: CniOverride) -> Self {
        value.as_string()
    }
}

impl TryFrom<String> for CniOverride {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "interfaceName" => Ok(CniOverride::InterfaceName),
            "deviceField" => Ok(CniOverride::DeviceField),
            "network" => Err(
                "`network` is no longer an override: say which networks claims \
                 may bring with cni.claimMayBring (inline, networkAttachmentDefinition)"
                    .to_owned(),
            ),
            other if other.starts_with("plugins[") => other
                .parse::<PluginFieldPath>()
                .map(CniOverride::PluginField),
            other => Err(format!(
                "unknown override {other:?}: want interfaceName, deviceField or a plugin field \
                 path such as plugins[0].ipam.addresses"
            )),
        }
    }
}

impl JsonSchema for CniOverride {
    fn schema_name() -> Cow<'static, str> {
        "CniOverride".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What a claim may override: interfaceName, deviceField, or a plugin field path such as plugins[0].ipam.addresses (everything under it too).",
            "type": "string",
            "anyOf": [
                {"enum": ["interfaceName", "deviceField"]},
                {"pattern": PLUGIN_FIELD_PATH_PATTERN}
            ]
        })
    }
}

/// The shape of a plugin field path, as a regular expression (for the JSON Schema).
pub const PLUGIN_FIELD_PATH_PATTERN: &str = r"^plugins\[[0-9]+\](\.[A-Za-z0-9_-]+)+$";
/// The most keys a plugin field path may have after `plugins[N]`.
pub const MAX_PLUGIN_FIELD_DEPTH: usize = 8;

/// A field of a plugin of a network list: `plugins[0].ipam.addresses`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PluginFieldPath {
    /// The plugin's index in the list.
    pub plugin: usize,
    /// The keys from the plugin object down to the field (at least one).
    pub keys: Vec<String>,
}

impl PluginFieldPath {
    /// Whether `self` is `other` or lies under it (`plugins[0].ipam.addresses` under
    /// `plugins[0].ipam`).
    pub fn is_within(&self, other: &PluginFieldPath) -> bool {
        self.plugin == other.plugin && self.keys.starts_with(&other.keys)
    }
}

impl fmt::Display for PluginFieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugins[{}]", self.plugin)?;
        for key in &self.keys {
            write!(f, ".{key}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PluginFieldPath {
    type Err = String;

    /// Parses `plugins[N].key(.key)*`, keys of letters, digits, `_` and `-`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shape = || {
            format!(
                "{text:?} is not a plugin field path: want plugins[<index>].<key>(.<key>)*, \
                 keys of letters, digits, '_' and '-' (plugins[0].ipam.addresses)"
            )
        };
        let rest = text.strip_prefix("plugins[").ok_or_else(shape)?;
        let (index, rest) = rest.split_once(']').ok_or_else(shape)?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shape());
        }
        let plugin = index.parse::<usize>().map_err(|_| shape())?;
        let rest = rest.strip_prefix('.').ok_or_else(shape)?;
        let keys: Vec<String> = rest.split('.').map(str::to_owned).collect();
        let key_ok = |key: &String| {
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !keys.iter().all(key_ok) {
            return Err(shape());
        }
        if keys.len() > MAX_PLUGIN_FIELD_DEPTH {
            return Err(format!(
                "{text:?} has {} keys; at most {MAX_PLUGIN_FIELD_DEPTH}",
                keys.len()
            ));
        }
        Ok(Self { plugin, keys })
    }
}

/// DeviceClass configs only: the networks a claim may bring itself instead of (or, with
/// no class network, as) the network it runs. Everything a claim brings is checked as
/// the claim's own (`netclaim_api::policy`): no paths on the node, no host device, no
/// runtime-only keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimMayBring {
    /// A claim may give an inline network (`cniVersion`, `name`, `plugins`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inline: bool,
    /// A claim may name a `NetworkAttachmentDefinition`: in its own namespace, and in
    /// the grant's `otherNamespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_attachment_definition: Option<NadGrant>,
}

/// Which `NetworkAttachmentDefinition`s a claim may name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NadGrant {
    /// Namespaces besides the claim's own whose NADs claims may name; `"*"` for any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_namespaces: Vec<String>,
}

impl NadGrant {
    /// Whether a claim in `claim_namespace` may name a NAD in `nad_namespace`.
    pub fn permits(&self, claim_namespace: &str, nad_namespace: &str) -> bool {
        claim_namespace == nad_namespace
            || self
                .other_namespaces
                .iter()
                .any(|allowed| allowed == "*" || allowed == nad_namespace)
    }

    /// The namespaces allowed, for messages: `the claim's own, team-net`.
    pub fn describe(&self) -> String {
        let mut parts = vec!["the claim's own".to_owned()];
        parts.extend(self.other_namespaces.iter().map(|n| {
            if n == "*" {
                "any (*)".to_owned()
            } else {
                n.clone()
            }
        }));
        parts.join(", ")
    }
}

impl ClaimMayBring {
    /// Both grants together (several class configs grant the union).
    pub fn union(&mut self, other: &ClaimMayBring) {
        self.inline |= other.inline;
        if let Some(theirs) = &other.network_attachment_definition {
            let mine = self
                .network_attachment_definition
                .get_or_insert_with(NadGrant::default);
            for namespace in &theirs.other_namespaces {
                if !mine.other_namespaces.contains(namespace) {
                    mine.other_namespaces.push(namespace.clone());
                }
            }
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
    /// a `spec.config` over 10 KiB ([`MAX_OPAQUE_PARAMETERS_BYTES`], as for opaque
    /// parameters) is refused before it is parsed; an empty or missing `spec.config` is refused, since netclaim does not read CNI
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
            Some(Value::String(config)) if config.len() > MAX_OPAQUE_PARAMETERS_BYTES => {
                Err(ConfigError::single(
                    "spec.config",
                    format!(
                        "is {} bytes; netclaim takes a network of at most \
                         {MAX_OPAQUE_PARAMETERS_BYTES} bytes (the limit of opaque parameters)",
                        config.len()
                    ),
                ))
            }
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

    /// The fields of the inline network's first plugin that receive the allocated device
    /// ([`device_fields`]); empty when the network takes no device (a bridge, say).
    pub fn effective_device_fields(&self) -> Vec<String> {
        device_fields(
            self.plugins.first().and_then(CniPlugin::plugin_type),
            self.device_field.as_deref(),
        )
    }

    /// The overrides this (class) config grants, as a set.
    pub fn granted(&self) -> BTreeSet<CniOverride> {
        self.claim_may_override.iter().cloned().collect()
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

/// The fields of a list's first plugin (of type `plugin_type`) that receive the allocated
/// device: the type's own device field ([`default_device_field`]), which netclaim always
/// overwrites so that a config cannot point a known plugin at another host device, and
/// `deviceField` when set (for plugin types netclaim does not know).
///
/// # Example
/// ```
/// use netclaim_api::cni::device_fields;
/// assert_eq!(device_fields(Some("macvlan"), None), ["master"]);
/// assert_eq!(device_fields(Some("macvlan"), Some("dev")), ["master", "dev"]);
/// assert_eq!(device_fields(Some("bridge"), None), Vec::<String>::new());
/// ```
pub fn device_fields(plugin_type: Option<&str>, device_field: Option<&str>) -> Vec<String> {
    let mut fields: Vec<String> = plugin_type
        .and_then(default_device_field)
        .map(str::to_owned)
        .into_iter()
        .collect();
    if let Some(field) = device_field
        && !fields.iter().any(|f| f == field)
    {
        fields.push(field.to_owned());
    }
    fields
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
    if let Some(grant) = cni
        .claim_may_bring
        .as_ref()
        .and_then(|bring| bring.network_attachment_definition.as_ref())
    {
        for (index, namespace) in grant.other_namespaces.iter().enumerate() {
            if namespace != "*" && !crate::attributes::is_dns_label(namespace) {
                problems.push(
                    format!(
                        "{}[{index}]",
                        join(
                            path,
                            "claimMayBring.networkAttachmentDefinition.otherNamespaces"
                        )
                    ),
                    format!("{namespace:?} is not a namespace name (a DNS label) or \"*\""),
                );
            }
        }
    }
    for (index, granted) in cni.claim_may_override.iter().enumerate() {
        if let CniOverride::PluginField(field) = granted
            && let Some(why) = crate::policy::forbidden_override_path(field)
        {
            problems.push(
                format!("{}[{index}]", join(path, "claimMayOverride")),
                format!("{field}: {why}"),
            );
        }
    }
    for (key, value) in &cni.plugin_overrides {
        let at = format!("{}[{key:?}]", join(path, "pluginOverrides"));
        match key.parse::<PluginFieldPath>() {
            Err(message) => problems.push(at, message),
            Ok(field) => {
                if let Some(why) = crate::policy::forbidden_override_path(&field) {
                    problems.push(at.clone(), why);
                }
                crate::policy::check_claim_value(problems, &at, value, true);
            }
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
    if cni.plugins.len() > crate::policy::MAX_PLUGINS {
        problems.push(
            join(path, "plugins"),
            format!(
                "has {} plugins; a network has at most {} (each runs within the pod's start-up \
                 deadline)",
                cni.plugins.len(),
                crate::policy::MAX_PLUGINS
            ),
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
    // Any spelling a Go plugin reads as one of them (`crate::policy::fold_key`).
    for key in plugin.0.keys() {
        if RESERVED_PLUGIN_KEYS
            .iter()
            .any(|reserved| crate::policy::key_is(key, reserved))
        {
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
        assert_eq!(cni.effective_device_fields(), ["master"]);
        cni.device_field = Some("dev".into());
        assert_eq!(cni.effective_device_fields(), ["master", "dev"]);
    }
}
