//! The tenant boundary: what a claim may choose of what netclaim runs as root on a node.
//!
//! netclaim runs privileged on every node and execs CNI plugins as root. Two kinds of
//! people write its configuration: admins (DeviceClasses, the DaemonSet's flags), who are
//! trusted, and app teams (ResourceClaims, and the NetworkAttachmentDefinitions in their
//! own namespaces), who are not. The rules here keep what a claim says from choosing what
//! runs on the node beyond what its class grants (`docs/security.md` has the threat model).
//!
//! # What runs: the plugin allowlist ([`PluginAllowlist`], [`check_plugins`])
//! Every plugin of every network (the class's as well as a claim's: the allowlist is the
//! admin's flag, `netclaim run --cni-allowed-plugins`, and it bounds everything), IPAM
//! types included (the main plugin execs them), must be on the allowlist. It is checked
//! at prepare, so the claim fails with the field, and again before anything runs. The
//! default, [`DEFAULT_ALLOWED_PLUGINS`], is what stays inside the pod and the allocated
//! device whoever writes the config, given the other rules here:
//! - `macvlan`, `ipvlan`: a child of `master` in the pod's netns; netclaim always writes
//!   the allocated device into `master`.
//! - `host-device`: moves `device` into the pod; netclaim always writes the allocated
//!   device there and refuses `hwaddr`, `kernelpath` and `pciBusID`, which would select
//!   another. Without that substitution it would move any host NIC (the uplink).
//! - `static`: addresses and routes from the config, inside the pod only.
//! - `host-local`: leases from a range, kept under `dataDir` on the node; a claim may not
//!   set `dataDir` (nor `resolvConf`, a file it reads) — see the claim rules below.
//!
//! Left out, and why (an admin who wants one adds it to the flag):
//! - `bridge`, `ptp`: attach the pod to a host bridge or give it a host-side veth with
//!   host routes and, with `ipMasq`, iptables rules on the node.
//! - `portmap`, `firewall`: write the node's iptables/nftables (`portmap` can forward a
//!   node port, even 22, into the pod).
//! - `bandwidth`: creates an ifb device and qdiscs in the node's namespace.
//! - `tuning`: writes sysctls (any under `net.` inside the pod, beyond the few Kubernetes
//!   calls safe), promiscuous mode, and keeps state under a `dataDir` on the node.
//! - `vlan`: creates a VLAN on the parent with a config-chosen id: a tenant could join
//!   any VLAN the parent carries.
//! - `dhcp`: needs the node's DHCP daemon and passes claim-chosen DHCP options to it.
//! - `sriov`: configures the VF from the config (`vlan`, `spoofchk`, `trust`): a tenant
//!   could lift the switch's protections.
//! - `sbr`, `vrf`, `loopback`, `dummy`, `tap`: not needed for a claimed NIC.
//!
//! Device-taking plugin types (`macvlan`, `ipvlan`, `host-device`, `sriov`:
//! [`crate::cni::default_device_field`]) may only be a list's first plugin, the one netclaim
//! hands the allocated device; further down a chain they would act on whatever device
//! their config names.
//!
//! # What a claim may set ([`check_claim_network`]; overrides when a config is validated)
//! A claim gets a network only as its class grants (`claimMayBring`, [`crate::merge`]);
//! a network it brings (inline, or a NetworkAttachmentDefinition it names or that a class
//! reference resolves in the claim's own namespace) and every plugin field it overrides
//! may never contain:
//! - a key that picks a host device ([`DEVICE_KEYS`]), except the first plugin's device
//!   fields, which netclaim overwrites with the allocated device;
//! - a key that names a file, directory or socket on the node ([`is_path_key`]: `dataDir`,
//!   `resolvConf`, and every key ending in `Dir`, `Path`, `File` or `Socket`);
//! - a key the container runtime fills ([`RUNTIME_KEYS`]: `runtimeConfig`, `capabilities`);
//! - a string that reads as a path on the node ([`looks_like_path`]: any `/` that is not
//!   an address prefix's, a leading `~`: plugins run with `/` as their working directory,
//!   so `etc/shadow` is `/etc/shadow` to them).
//!
//! Overrides may also not name a plugin's `type` (the executable) anywhere in their path
//! or value, nor the runtime's keys (`name`, `cniVersion`, `prevResult`).
//!
//! # Assumptions
//! The key rules are a denylist over plugin fields: they are exact for the default
//! plugins, whose fields are known, and a best effort for others. An admin who allows
//! another plugin type decides whether claims may bring networks using it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use crate::cni::{
    CniNetworkList, CniPlugin, NetworkAttachmentReference, PluginFieldPath, RESERVED_PLUGIN_KEYS,
    check_plugin_type, default_device_field, device_fields,
};
use crate::error::{ConfigError, Problems};
use crate::merge::ConfigSource;

/// The most plugins a network list may have. Every plugin is an exec inside the pod's
/// start-up hook (containerd gives the whole hook 2 s by default) and again, in reverse,
/// on teardown; real chains have one to four (main, IPAM is nested, a meta plugin or two).
pub const MAX_PLUGINS: usize = 8;

/// The plugin types allowed when the admin gives no `--cni-allowed-plugins` (see the
/// [module docs](self) for why each is, and others are not, on it).
pub const DEFAULT_ALLOWED_PLUGINS: [&str; 5] =
    ["host-device", "host-local", "ipvlan", "macvlan", "static"];

/// Plugin keys that pick a host device: `master` (macvlan, ipvlan), `device`, `hwaddr`,
/// `kernelpath`, `pciBusID` (host-device), `deviceID` (sriov and device-plugin style).
pub const DEVICE_KEYS: [&str; 6] = [
    "master",
    "device",
    "deviceID",
    "hwaddr",
    "kernelpath",
    "pciBusID",
];

/// host-device's ways to pick a device other than `device`, which netclaim fills.
pub const HOST_DEVICE_SELECTORS: [&str; 3] = ["hwaddr", "kernelpath", "pciBusID"];

/// Keys the container runtime fills from CNI capabilities (port mappings, bandwidth,
/// device ids, cgroup paths); in a config they would speak for the runtime.
pub const RUNTIME_KEYS: [&str; 2] = ["runtimeConfig", "capabilities"];

/// Whether a plugin key names a file, directory or socket on the node: `dataDir`,
/// `resolvConf`, and any key ending in `dir`, `path`, `file` or `socket` (any case:
/// host-device's `kernelpath`, dhcp's `daemonSocketPath`).
///
/// # Example
/// ```
/// use netclaim_api::policy::is_path_key;
/// assert!(is_path_key("dataDir") && is_path_key("resolvConf") && is_path_key("daemonSocketPath"));
/// assert!(!is_path_key("addresses") && !is_path_key("mode"));
/// ```
pub fn is_path_key(key: &str) -> bool {
    let lower = fold_key(key);
    lower == "resolvconf"
        || ["dir", "path", "file", "socket"]
            .iter()
            .any(|suffix| lower.ends_with(suffix))
}

/// A plugin key as CNI plugins match it to their fields: the plugins are Go programs, and
/// Go's `encoding/json` matches object keys to struct fields case-insensitively with
/// Unicode simple case folding, so `Master`, `MASTER` and `maſter` (U+017F, a long s) all
/// set the field `master`, and `\u{212A}ernelpath` (the Kelvin sign) sets `kernelpath`.
/// Every key rule here compares folded keys: a rule on the exact spelling alone would let
/// a variant through to the same field. Returns the key in ASCII lower case with those two
/// letters mapped to `s` and `k` (the only non-ASCII runes that fold to ASCII letters).
///
/// # Example
/// ```
/// use netclaim_api::policy::fold_key;
/// assert_eq!(fold_key("MASTER"), "master");
/// assert_eq!(fold_key("ma\u{17F}ter"), "master");
/// assert_eq!(fold_key("\u{212A}ernelpath"), "kernelpath");
/// ```
pub fn fold_key(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Whether `key` sets the field `name` of a Go plugin ([`fold_key`]).
pub fn key_is(key: &str, name: &str) -> bool {
    fold_key(key) == fold_key(name)
}

/// Whether a string reads as a path on the node: it starts with `~`, is `..`, or has a
/// `/` and is not an address with a prefix length (`192.0.2.0/24`, `2001:db8::1/64`).
/// Plugins run with `/` as their working directory, so a relative `etc/shadow` reaches
/// `/etc/shadow` just as `../x` and `/x` do; the values a tenant legitimately gives a
/// plugin (addresses, names, MACs, numbers) have no `/` but in a prefix.
///
/// ```
/// use netclaim_api::policy::looks_like_path;
/// assert!(looks_like_path("etc/shadow") && looks_like_path("/run/x") && looks_like_path(".."));
/// assert!(!looks_like_path("192.0.2.10/24") && !looks_like_path("2001:db8::/32"));
/// ```
pub fn looks_like_path(value: &str) -> bool {
    value.starts_with('~') || value == ".." || (value.contains('/') && !is_address_prefix(value))
}

/// `<IPv4 or IPv6 address>/<length>`, the length within the family's bits.
fn is_address_prefix(value: &str) -> bool {
    let Some((address, length)) = value.split_once('/') else {
        return false;
    };
    let Ok(length) = length.parse::<u8>() else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => length <= 32,
        Ok(std::net::IpAddr::V6(_)) => length <= 128,
        Err(_) => false,
    }
}

/// The plugin types an admin allows netclaim to run (`--cni-allowed-plugins`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginAllowlist {
    types: BTreeSet<String>,
}

impl Default for PluginAllowlist {
    /// [`DEFAULT_ALLOWED_PLUGINS`].
    fn default() -> Self {
        Self {
            types: DEFAULT_ALLOWED_PLUGINS
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
        }
    }
}

impl PluginAllowlist {
    /// An allowlist of exactly `types`.
    ///
    /// # Errors
    /// A type that is not a bare plugin file name ([`check_plugin_type`]), or none at all.
    pub fn new<I, S>(types: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for plugin_type in types {
            let plugin_type = plugin_type.as_ref().trim();
            if plugin_type.is_empty() {
                continue;
            }
            check_plugin_type(plugin_type).map_err(|why| format!("{plugin_type:?}: {why}"))?;
            set.insert(plugin_type.to_owned());
        }
        if set.is_empty() {
            return Err("no plugin types given".to_owned());
        }
        Ok(Self { types: set })
    }

    /// The default list plus `more` (for tests and tools that run extra plugins).
    ///
    /// # Errors
    /// As [`PluginAllowlist::new`].
    pub fn default_and<I, S>(more: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let extra: Vec<String> = more.into_iter().map(|s| s.as_ref().to_owned()).collect();
        Self::new(
            DEFAULT_ALLOWED_PLUGINS
                .iter()
                .copied()
                .chain(extra.iter().map(String::as_str)),
        )
    }

    /// Whether `plugin_type` may run.
    pub fn permits(&self, plugin_type: &str) -> bool {
        self.types.contains(plugin_type)
    }

    /// The allowed types, sorted.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(String::as_str)
    }
}

impl fmt::Display for PluginAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.types().collect::<Vec<_>>().join(", "))
    }
}

/// Checks what a network would run, whoever wrote it: at most [`MAX_PLUGINS`] plugins,
/// every plugin type and IPAM type on `allowed`, device-taking types only first, and no
/// host-device selector other than `device`. Run at prepare and again before any plugin
/// of the list is executed.
///
/// # Errors
/// A [`ConfigError`] with paths inside the list (`plugins[1].type`, `plugins[0].ipam.type`).
///
/// # Example
/// ```
/// use netclaim_api::CniNetworkList;
/// use netclaim_api::policy::{PluginAllowlist, check_plugins};
/// let list = CniNetworkList::parse(br#"{"cniVersion": "1.0.0", "name": "n",
///     "plugins": [{"type": "macvlan"}, {"type": "portmap"}]}"#).unwrap();
/// let error = check_plugins(&list, &PluginAllowlist::default()).unwrap_err();
/// assert_eq!(error.errors[0].path, "plugins[1].type");
/// ```
pub fn check_plugins(list: &CniNetworkList, allowed: &PluginAllowlist) -> Result<(), ConfigError> {
    let mut problems = Problems::default();
    if list.plugins.len() > MAX_PLUGINS {
        problems.push(
            "plugins",
            format!(
                "has {} plugins; a network has at most {MAX_PLUGINS}",
                list.plugins.len()
            ),
        );
    }
    for (index, plugin) in list.plugins.iter().enumerate() {
        let at = format!("plugins[{index}]");
        let plugin_type = plugin.plugin_type().unwrap_or_default();
        check_allowed(&mut problems, &format!("{at}.type"), plugin_type, allowed);
        // Every key a Go plugin reads as `ipam.type` (any case variant of either), since
        // the main plugin execs whichever it decodes.
        for (ipam_key, ipam) in plugin.0.iter().filter(|(key, _)| key_is(key, "ipam")) {
            let Value::Object(ipam) = ipam else { continue };
            for (type_key, ipam_type) in ipam.iter().filter(|(key, _)| key_is(key, "type")) {
                let at = format!("{at}.{ipam_key}.{type_key}");
                match ipam_type {
                    Value::String(ipam_type) => {
                        check_allowed(&mut problems, &at, ipam_type, allowed);
                    }
                    other => problems.push(at, format!("{other} is not an IPAM plugin type")),
                }
            }
        }
        if index > 0 && default_device_field(plugin_type).is_some() {
            problems.push(
                format!("{at}.type"),
                format!(
                    "{plugin_type:?} takes a host device, and only a list's first plugin is \
                     given the allocated one: further down it would act on whatever device \
                     its config names; put it first or leave it out"
                ),
            );
        }
        if plugin_type == "host-device" {
            for key in plugin.0.keys() {
                if HOST_DEVICE_SELECTORS
                    .iter()
                    .any(|selector| key_is(key, selector))
                {
                    problems.push(
                        format!("{at}.{key}"),
                        "selects a host device other than the allocated one, which netclaim \
                         hands host-device in `device`; remove it",
                    );
                }
            }
        }
    }
    problems.into_result()
}

fn check_allowed(problems: &mut Problems, at: &str, plugin_type: &str, allowed: &PluginAllowlist) {
    if !allowed.permits(plugin_type) {
        problems.push(
            at,
            format!(
                "{plugin_type:?} is not an allowed CNI plugin on this node (allowed: {allowed}; \
                 an admin allows more with netclaim run --cni-allowed-plugins)"
            ),
        );
    }
}

/// Who wrote the network a device runs: an admin (a DeviceClass's inline network, or a
/// NetworkAttachmentDefinition the class names in a namespace other than the claim's) or
/// the claim's side (anything the claim brings, and a NAD in the claim's own namespace,
/// which its app team may write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkAuthor {
    /// Trusted: the network is checked by [`check_plugins`] only.
    Admin,
    /// Untrusted: also [`check_claim_network`].
    Claim,
}

impl NetworkAuthor {
    /// Who wrote a network chosen by a config of `source`: inline (`reference` `None`) or
    /// by a reference that resolves to `nad_namespace` for a claim in `claim_namespace`.
    ///
    /// # Example
    /// ```
    /// use netclaim_api::ConfigSource;
    /// use netclaim_api::policy::NetworkAuthor;
    /// assert_eq!(NetworkAuthor::of(ConfigSource::Class, None, "app"), NetworkAuthor::Admin);
    /// assert_eq!(NetworkAuthor::of(ConfigSource::Class, Some("net-admin"), "app"), NetworkAuthor::Admin);
    /// // A class reference without a namespace resolves in the claim's namespace.
    /// assert_eq!(NetworkAuthor::of(ConfigSource::Class, Some("app"), "app"), NetworkAuthor::Claim);
    /// assert_eq!(NetworkAuthor::of(ConfigSource::Claim, None, "app"), NetworkAuthor::Claim);
    /// ```
    pub fn of(source: ConfigSource, nad_namespace: Option<&str>, claim_namespace: &str) -> Self {
        match (source, nad_namespace) {
            (ConfigSource::Class | ConfigSource::Network, None) => NetworkAuthor::Admin,
            (ConfigSource::Class | ConfigSource::Network, Some(namespace))
                if namespace != claim_namespace =>
            {
                NetworkAuthor::Admin
            }
            _ => NetworkAuthor::Claim,
        }
    }
}

/// The namespace a reference resolves to for a claim in `claim_namespace`.
pub fn reference_namespace<'a>(
    reference: &'a NetworkAttachmentReference,
    claim_namespace: &'a str,
) -> &'a str {
    reference.namespace.as_deref().unwrap_or(claim_namespace)
}

/// Checks a network written on the claim's side ([`NetworkAuthor::Claim`]) before the
/// device is substituted, with the rules of the [module docs](self): no host device
/// other than the first plugin's device fields (`device_field`: the config's
/// `cni.deviceField`), no node paths, no runtime keys.
///
/// # Errors
/// A [`ConfigError`] with paths inside the list (`plugins[0].ipam.dataDir`).
pub fn check_claim_network(
    list: &CniNetworkList,
    device_field: Option<&str>,
) -> Result<(), ConfigError> {
    let mut problems = Problems::default();
    for (index, plugin) in list.plugins.iter().enumerate() {
        let substituted = if index == 0 {
            device_fields(plugin.plugin_type(), device_field)
        } else {
            Vec::new()
        };
        let at = format!("plugins[{index}]");
        for (key, value) in &plugin.0 {
            if key == "type" || substituted.iter().any(|f| f == key) {
                continue;
            }
            let key_at = format!("{at}.{key}");
            if let Some(field) = substituted.iter().find(|f| key_is(key, f)) {
                // A Go plugin reads this key as the device field, and whichever of the two
                // comes last in the JSON wins.
                problems.push(
                    key_at,
                    format!(
                        "is the device field {field:?} as the plugin reads it (plugins match \
                         keys in any case); netclaim gives the plugin the allocated device, and \
                         a claim may not choose another"
                    ),
                );
                continue;
            }
            if key_is(key, "ipam") {
                // ipam.type is the IPAM executable: the allowlist decides about it.
                if let Value::Object(ipam) = value {
                    for (ipam_key, ipam_value) in ipam {
                        if !key_is(ipam_key, "type") {
                            check_claim_entry(
                                &mut problems,
                                &format!("{key_at}.{ipam_key}"),
                                ipam_key,
                                ipam_value,
                                false,
                            );
                        }
                    }
                    continue;
                }
            }
            check_claim_entry(&mut problems, &key_at, key, value, false);
        }
    }
    problems.into_result()
}

/// Checks a value a claim supplies for a plugin field (`cni.pluginOverrides`): every key
/// inside it and every string, with the rules of the [module docs](self); `overriding`
/// also refuses `type` keys (a claim may not change an executable) and the runtime's
/// keys.
pub(crate) fn check_claim_value(
    problems: &mut Problems,
    at: &str,
    value: &Value,
    overriding: bool,
) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                check_claim_entry(problems, &format!("{at}.{key}"), key, inner, overriding);
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                check_claim_value(problems, &format!("{at}[{index}]"), inner, overriding);
            }
        }
        Value::String(text) if looks_like_path(text) => problems.push(
            at,
            format!("{text:?} reads as a path on the node; a claim may not give paths"),
        ),
        _ => {}
    }
}

fn check_claim_entry(
    problems: &mut Problems,
    at: &str,
    key: &str,
    value: &Value,
    overriding: bool,
) {
    match key_problem(key, overriding) {
        Some(why) => problems.push(at, why),
        None => check_claim_value(problems, at, value, overriding),
    }
}

/// Why a claim may not set a plugin key, if it may not.
fn key_problem(key: &str, overriding: bool) -> Option<&'static str> {
    if DEVICE_KEYS.iter().any(|device_key| key_is(key, device_key)) {
        return Some(
            "picks a host device; netclaim gives the plugin the allocated device, and a claim \
             may not choose another",
        );
    }
    if RUNTIME_KEYS
        .iter()
        .any(|runtime_key| key_is(key, runtime_key))
    {
        return Some(
            "is the container runtime's to fill (CNI capabilities); a claim may not set it",
        );
    }
    if is_path_key(key) {
        return Some(
            "names a file, directory or socket on the node, which a claim may not choose \
             (the plugin's default applies)",
        );
    }
    if overriding && key_is(key, "type") {
        return Some("chooses a plugin executable; a claim may not change it");
    }
    if overriding
        && RESERVED_PLUGIN_KEYS
            .iter()
            .any(|reserved| key_is(key, reserved))
    {
        return Some("is set by the runtime");
    }
    None
}

/// Why no claim may ever be granted (or set) the plugin field `path`, if so: a `type`
/// (an executable), a device, path or runtime key anywhere along it.
///
/// # Example
/// ```
/// use netclaim_api::cni::PluginFieldPath;
/// use netclaim_api::policy::forbidden_override_path;
/// let ok: PluginFieldPath = "plugins[0].ipam.addresses".parse().unwrap();
/// assert!(forbidden_override_path(&ok).is_none());
/// let bad: PluginFieldPath = "plugins[0].ipam.dataDir".parse().unwrap();
/// assert!(forbidden_override_path(&bad).unwrap().contains("on the node"));
/// ```
pub fn forbidden_override_path(path: &PluginFieldPath) -> Option<String> {
    path.keys.iter().find_map(|key| {
        key_problem(key, true).map(|why| format!("{key:?} {why}; no class can grant it"))
    })
}

/// Applies a claim's `cni.pluginOverrides` to `list`: each value replaces the field at its
/// path, creating the objects on the way. The overrides were vetted when the configs were
/// merged ([`crate::merge`]); this also makes sure that no plugin's `type` or
/// `ipam.type` changed.
///
/// # Errors
/// A path beyond the list's plugins or through a value that is not an object; a changed
/// executable. Paths are `cni.pluginOverrides["plugins[1].mtu"]`.
pub fn apply_plugin_overrides(
    list: &CniNetworkList,
    overrides: &BTreeMap<String, Value>,
) -> Result<CniNetworkList, ConfigError> {
    let mut out = list.clone();
    let mut problems = Problems::default();
    for (key, value) in overrides {
        let at = format!("cni.pluginOverrides[{key:?}]");
        let path = match key.parse::<PluginFieldPath>() {
            Ok(path) => path,
            Err(why) => {
                problems.push(at, why);
                continue;
            }
        };
        let count = out.plugins.len();
        let Some(CniPlugin(plugin)) = out.plugins.get_mut(path.plugin) else {
            problems.push(
                at,
                format!(
                    "the network has {count} plugin{}: there is no plugins[{}]",
                    if count == 1 { "" } else { "s" },
                    path.plugin
                ),
            );
            continue;
        };
        if let Err(why) = set_at(plugin, &path.keys, value.clone()) {
            problems.push(at, why);
        }
    }
    problems.into_result()?;
    let executables = |list: &CniNetworkList| -> Vec<(Option<String>, Option<String>)> {
        list.plugins
            .iter()
            .map(|p| {
                (
                    p.plugin_type().map(str::to_owned),
                    p.0.get("ipam")
                        .and_then(|i| i.get("type"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                )
            })
            .collect()
    };
    if executables(&out) != executables(list) {
        return Err(ConfigError::single(
            "cni.pluginOverrides",
            "would change which plugin executables run; a claim may not",
        ));
    }
    Ok(out)
}

fn set_at(
    object: &mut serde_json::Map<String, Value>,
    keys: &[String],
    value: Value,
) -> Result<(), String> {
    let Some((last, parents)) = keys.split_last() else {
        return Err("no field named".to_owned());
    };
    let mut current = object;
    for (depth, key) in parents.iter().enumerate() {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        current = match entry {
            Value::Object(inner) => inner,
            _ => {
                return Err(format!(
                    "{} is not an object in the network, so it has no field {}",
                    keys[..=depth].join("."),
                    keys[depth + 1]
                ));
            }
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_path_keys() {
        for path in [
            "/var/lib",
            "~root",
            "../x",
            "a/../../b",
            "..",
            // Relative: the plugin's working directory is `/`.
            "etc/shadow",
            "var/run/netns/other-pod",
            // Not an address prefix, however close.
            "192.0.2.0/33",
            "2001:db8::/129",
            "192.0.2.0/24/x",
            "192.0.2.0/",
            "host/24",
        ] {
            assert!(looks_like_path(path), "{path}");
        }
        for value in [
            "192.0.2.0/24",
            "192.0.2.10/24",
            "2001:db8::/32",
            "2001:db8::1/128",
            "0.0.0.0/0",
            "bridge",
            "a..b",
            "net1",
            "aa:bb:cc:dd:ee:ff",
        ] {
            assert!(!looks_like_path(value), "{value}");
        }
        for key in [
            "dataDir",
            "logFile",
            "daemonSocketPath",
            "kernelpath",
            "binDir",
        ] {
            assert!(is_path_key(key), "{key}");
        }
    }

    #[test]
    fn an_allowlist_refuses_paths_and_emptiness() {
        assert!(PluginAllowlist::new(["macvlan", "../sh"]).is_err());
        assert!(PluginAllowlist::new(["", " "]).is_err());
        let list = PluginAllowlist::new(["tuning", " macvlan "]).unwrap();
        assert_eq!(list.to_string(), "macvlan, tuning");
        assert!(PluginAllowlist::default().permits("host-local"));
        assert!(!PluginAllowlist::default().permits("portmap"));
    }

    #[test]
    fn overrides_set_nested_fields_and_keep_executables() {
        let list = CniNetworkList::parse(
            br#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan", "ipam": {"type": "static"}, "mode": "bridge"}]}"#,
        )
        .unwrap();
        let overrides: BTreeMap<String, Value> = [
            (
                "plugins[0].ipam.addresses".to_owned(),
                serde_json::json!([{"address": "192.0.2.9/24"}]),
            ),
            ("plugins[0].mtu".to_owned(), serde_json::json!(1400)),
        ]
        .into();
        let out = apply_plugin_overrides(&list, &overrides).unwrap();
        assert_eq!(
            out.plugins[0].0["ipam"]["addresses"][0]["address"],
            "192.0.2.9/24"
        );
        assert_eq!(out.plugins[0].0["ipam"]["type"], "static");
        assert_eq!(out.plugins[0].0["mtu"], 1400);

        let beyond: BTreeMap<String, Value> =
            [("plugins[1].mtu".to_owned(), serde_json::json!(1))].into();
        let error = apply_plugin_overrides(&list, &beyond).unwrap_err();
        assert_eq!(
            error.errors[0].path,
            "cni.pluginOverrides[\"plugins[1].mtu\"]"
        );
        assert!(error.errors[0].message.contains("has 1 plugin:"), "{error}");
        let through: BTreeMap<String, Value> =
            [("plugins[0].mode.x".to_owned(), serde_json::json!(1))].into();
        let error = apply_plugin_overrides(&list, &through).unwrap_err();
        assert!(
            error.errors[0].message.contains("mode is not an object"),
            "{error}"
        );
        let ipam: BTreeMap<String, Value> = [(
            "plugins[0].ipam".to_owned(),
            serde_json::json!({"type": "dhcp"}),
        )]
        .into();
        let error = apply_plugin_overrides(&list, &ipam).unwrap_err();
        assert!(error.to_string().contains("executables"), "{error}");
    }
}
