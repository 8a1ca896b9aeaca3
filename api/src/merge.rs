//! Which opaque configs apply to a request, and how they combine into one.
//!
//! A device's configuration can come from its DeviceClass (`spec.config`) and from the
//! ResourceClaim (`spec.devices.config`). Each entry may name the requests it applies to.
//!
//! # Precedence
//! 1. Only entries that apply to the request take part ([`configs_for_request`]): an entry
//!    with no `requests` applies to every request; otherwise it applies to the requests it
//!    names, and an entry naming `main` also applies to the subrequests `main/<sub>`.
//! 2. They are ordered: the device's PodNetwork config first (see [`crate::podnetwork`]),
//!    then DeviceClass configs, then claim configs; within each source by their position
//!    in the object's list (`index`). DeviceClass before claim is the order DRA gives them
//!    to drivers: the network and the class set defaults, the claim refines them.
//! 3. Later wins, field by field ([`merge_configs`]):
//!    - optional fields (`name`, `mtu`, `hardwareAddress`): a later value that is set wins;
//!    - `sysctls`: merged per sysctl, a later value that is set wins;
//!    - lists (`addresses`, `routes`, `rules`, `neighbors`) and the `ethtoolFeatures` map:
//!      a later non-empty one replaces the earlier one whole (they are not concatenated:
//!      an address list is meant as a whole).
//!
//! 4. CNI mode (`cni`, see [`crate::cni`]): a later `cni` section that names a network
//!    (inline or by reference) replaces the earlier network whole; a set `deviceField`
//!    wins; `pluginOverrides` merge per path, later winning; `claimMayOverride` and
//!    `claimMayBring` are the union of the class configs'.
//! 5. The DeviceClass (and the PodNetwork, which counts as a class config here) decides
//!    what a claim may say about CNI (the tenant boundary, see
//!    [`crate::policy`]); anything else a claim sets is an error naming the claim config
//!    and the field (`claim config[0]: cni.plugins: ...`):
//!    - a network of its own (`cni.cniVersion`/`name`/`plugins`) only with
//!      `cni.claimMayBring.inline`, a `cni.networkAttachmentDefinition` only with
//!      `cni.claimMayBring.networkAttachmentDefinition` (its namespace is checked at
//!      prepare, where the claim's namespace is known), whether or not the class has a
//!      network: with neither, a claim gets the class's network or none;
//!    - when the class defines the network, `interface.name` only with `interfaceName` in
//!      `cni.claimMayOverride`, `cni.deviceField` only with `deviceField`, and no static
//!      `interface` settings;
//!    - `cni.pluginOverrides["plugins[0].ipam.addresses"]` only when `claimMayOverride`
//!      lists that path or one above it (`plugins[0].ipam`); no class can grant a path
//!      through `type`, a device, node-path or runtime key, and no override value may
//!      carry one ([`crate::policy::forbidden_override_path`]);
//!    - a claim's `deviceField` may not name a node-path or runtime key;
//!    - `claimMayOverride` and `claimMayBring` in a claim config, and `pluginOverrides` in
//!      a class config, are errors.
//!
//! A later config cannot unset an earlier value; write the wanted value instead.
//! Each config is validated on its own (so an error names the config to fix) and the
//! merged result is validated again (so conflicts between configs are caught).

use std::borrow::Borrow;
use std::fmt;

use std::collections::BTreeSet;

use crate::cni::{ClaimMayBring, CniConfig, CniOverride, PluginFieldPath};
use crate::config::{InterfaceConfig, NetworkConfig, Sysctls};
use crate::error::{ConfigError, Problems};
use crate::policy::is_path_key;

/// Where an opaque config came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigSource {
    /// The `spec.parameters.config` of the PodNetwork the device belongs to
    /// ([`crate::podnetwork`]); applied first. Admin-owned like a DeviceClass config: it
    /// takes part in what claims are granted, and claims refine it only where allowed.
    Network,
    /// The DeviceClass's `spec.config`; applied after the network's.
    Class,
    /// The ResourceClaim's `spec.devices.config`; applied after the class's.
    Claim,
}

impl ConfigSource {
    /// Whether an admin writes configs from this source (a PodNetwork or a DeviceClass),
    /// as opposed to the claim's tenant.
    pub fn is_admin(self) -> bool {
        matches!(self, ConfigSource::Network | ConfigSource::Class)
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigSource::Network => "podNetwork",
            ConfigSource::Class => "class",
            ConfigSource::Claim => "claim",
        })
    }
}

/// One parsed opaque config with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct SourcedConfig {
    /// The object that carried it.
    pub source: ConfigSource,
    /// The requests it applies to; empty means all of them.
    pub requests: Vec<String>,
    /// Its position in that object's config list.
    pub index: usize,
    /// The config itself.
    pub config: NetworkConfig,
}

impl SourcedConfig {
    /// Parses raw opaque parameters into a sourced config; errors are labelled with
    /// [`SourcedConfig::label`] so they name the config to fix.
    ///
    /// # Errors
    /// What [`crate::parse_config`] returns, in context.
    pub fn parse(
        source: ConfigSource,
        requests: Vec<String>,
        index: usize,
        raw: &[u8],
    ) -> Result<Self, ConfigError> {
        let label = label_for(source, &requests, index);
        let config = crate::parse_config(raw).map_err(|error| error.in_context(&label))?;
        Ok(Self {
            source,
            requests,
            index,
            config,
        })
    }

    /// How errors name this config: `claim config[1] (requests [nic])`, or
    /// `class config[0]` when it applies to all requests.
    pub fn label(&self) -> String {
        label_for(self.source, &self.requests, self.index)
    }

    /// Whether this config applies to `request` (`main` or a subrequest `main/sub`).
    pub fn applies_to(&self, request: &str) -> bool {
        self.requests.is_empty()
            || self.requests.iter().any(|named| {
                named == request
                    || request
                        .strip_prefix(named.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

fn label_for(source: ConfigSource, requests: &[String], index: usize) -> String {
    if requests.is_empty() {
        format!("{source} config[{index}]")
    } else {
        format!(
            "{source} config[{index}] (requests [{}])",
            requests.join(", ")
        )
    }
}

/// The configs that apply to `request`, in precedence order (class before claim, then by
/// index; see the [module docs](self)).
///
/// # Example
/// ```
/// use netclaim_api::{ConfigSource, NetworkConfig, SourcedConfig, configs_for_request};
///
/// let entry = |source, requests: &[&str], index| SourcedConfig {
///     source,
///     requests: requests.iter().map(|r| r.to_string()).collect(),
///     index,
///     config: NetworkConfig::default(),
/// };
/// let all = [
///     entry(ConfigSource::Claim, &["nic"], 0),
///     entry(ConfigSource::Class, &[], 0),
///     entry(ConfigSource::Claim, &["other"], 1),
/// ];
/// let picked = configs_for_request(&all, "nic/fast");
/// assert_eq!(picked.len(), 2);
/// assert_eq!(picked[0].source, ConfigSource::Class);
/// ```
pub fn configs_for_request<'a>(all: &'a [SourcedConfig], request: &str) -> Vec<&'a SourcedConfig> {
    let mut picked: Vec<_> = all.iter().filter(|c| c.applies_to(request)).collect();
    sort_by_precedence(&mut picked);
    picked
}

/// Stable sort, so entries that tie keep the caller's order.
fn sort_by_precedence<C: Borrow<SourcedConfig>>(configs: &mut [C]) {
    configs.sort_by_key(|c| (c.borrow().source, c.borrow().index));
}

/// Merges configs into one, later winning field by field (see the [module docs](self)),
/// and validates the result.
///
/// Accepts owned configs or the references [`configs_for_request`] returns. The configs
/// are put in precedence order first, whatever order they come in. No configs merge into
/// an empty config: nothing to change on the interface.
///
/// # Errors
/// The problems of every config that is invalid on its own, each prefixed with the
/// config's [`SourcedConfig::label`]; otherwise the problems of the merged config,
/// prefixed `merged config`.
///
/// # Example
/// ```
/// use netclaim_api::{ConfigSource, InterfaceConfig, NetworkConfig, SourcedConfig, merge_configs};
///
/// let class = SourcedConfig {
///     source: ConfigSource::Class,
///     requests: vec![],
///     index: 0,
///     config: NetworkConfig::for_interface(InterfaceConfig {
///         mtu: Some(9000),
///         name: Some("net1".into()),
///         ..Default::default()
///     }),
/// };
/// let claim = SourcedConfig {
///     source: ConfigSource::Claim,
///     requests: vec!["nic".into()],
///     index: 0,
///     config: NetworkConfig::for_interface(InterfaceConfig {
///         mtu: Some(1500),
///         ..Default::default()
///     }),
/// };
/// let merged = merge_configs(&[claim, class]).unwrap();
/// assert_eq!(merged.interface.mtu, Some(1500)); // the claim wins
/// assert_eq!(merged.interface.name.as_deref(), Some("net1")); // the class's stays
/// ```
pub fn merge_configs<C: Borrow<SourcedConfig>>(
    configs: &[C],
) -> Result<NetworkConfig, ConfigError> {
    let mut ordered: Vec<&SourcedConfig> = configs.iter().map(Borrow::borrow).collect();
    sort_by_precedence(&mut ordered);

    let mut problems = Problems::default();
    for sourced in &ordered {
        if let Err(error) = sourced.config.validate() {
            problems.extend(error.in_context(&sourced.label()));
        }
    }
    problems.into_result()?;
    check_claim_overrides(&ordered)?;

    let mut merged = NetworkConfig::for_interface(InterfaceConfig::default());
    for sourced in &ordered {
        overlay_interface(&mut merged.interface, &sourced.config.interface);
        if let Some(later) = &sourced.config.cni {
            overlay_cni(merged.cni.get_or_insert_with(CniConfig::default), later);
        }
    }
    merged
        .validate()
        .map_err(|error| error.in_context("merged config"))?;
    if let Some(cni) = &merged.cni
        && !cni.has_network()
    {
        return Err(ConfigError::single(
            "cni",
            "no network: give an inline network (cniVersion, name, plugins) or a \
             networkAttachmentDefinition in the class or the claim config",
        )
        .in_context("merged config"));
    }
    Ok(merged)
}

/// Merges the configs that apply to `request`: [`configs_for_request`] then
/// [`merge_configs`].
///
/// # Errors
/// As [`merge_configs`].
pub fn merge_for_request(
    all: &[SourcedConfig],
    request: &str,
) -> Result<NetworkConfig, ConfigError> {
    merge_configs(&configs_for_request(all, request))
}

/// The config whose network a request runs: the last one, by precedence, that names a
/// network (it replaced the earlier ones); `None` when none does.
///
/// # Example
/// ```
/// use netclaim_api::{ConfigSource, SourcedConfig, network_source};
/// let class = SourcedConfig::parse(ConfigSource::Class, vec![], 0, br#"{"apiVersion": "netclaim.dev/v1alpha1",
///     "kind": "NetworkConfig", "cni": {"networkAttachmentDefinition": {"namespace": "net", "name": "a"}}}"#).unwrap();
/// assert_eq!(network_source(&[class], "nic").unwrap().source, ConfigSource::Class);
/// ```
pub fn network_source<'a>(all: &'a [SourcedConfig], request: &str) -> Option<&'a SourcedConfig> {
    configs_for_request(all, request)
        .into_iter()
        .rev()
        .find(|sourced| {
            sourced
                .config
                .cni
                .as_ref()
                .is_some_and(CniConfig::has_network)
        })
}

/// What the DeviceClass configs grant claims, together.
#[derive(Default)]
struct Grants {
    owns_network: bool,
    overrides: BTreeSet<CniOverride>,
    bring: ClaimMayBring,
}

impl Grants {
    fn of(ordered: &[&SourcedConfig]) -> Self {
        let mut grants = Grants::default();
        for cni in ordered
            .iter()
            .filter(|c| c.source.is_admin())
            .filter_map(|c| c.config.cni.as_ref())
        {
            grants.owns_network |= cni.has_network();
            grants.overrides.extend(cni.granted());
            if let Some(bring) = &cni.claim_may_bring {
                grants.bring.union(bring);
            }
        }
        grants
    }

    fn override_names(&self) -> String {
        self.overrides
            .iter()
            .map(CniOverride::as_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn grants_plugin_field(&self, field: &PluginFieldPath) -> bool {
        self.overrides.iter().any(|granted| match granted {
            CniOverride::PluginField(granted) => field.is_within(granted),
            _ => false,
        })
    }

    /// Why a claim may not bring a network this way (`which`: `inline` or
    /// `networkAttachmentDefinition`).
    fn refuse_network(&self, which: &str) -> String {
        let mut allowed = Vec::new();
        if self.bring.inline {
            allowed.push("inline");
        }
        if self.bring.network_attachment_definition.is_some() {
            allowed.push("networkAttachmentDefinition");
        }
        let allowed = if allowed.is_empty() {
            "none".to_owned()
        } else {
            allowed.join(", ")
        };
        let class_network = if self.owns_network {
            "the DeviceClass defines the CNI network; "
        } else {
            ""
        };
        format!(
            "{class_network}claims may not bring their own network this way under this \
             DeviceClass (it lets claims bring: {allowed}); an admin allows it with \
             cni.claimMayBring.{which} in the class config"
        )
    }
}

/// Enforces what the DeviceClass grants on claim configs, and which fields belong to
/// which source (rule 5 of the [module docs](self)).
fn check_claim_overrides(ordered: &[&SourcedConfig]) -> Result<(), ConfigError> {
    let grants = Grants::of(ordered);
    let mut problems = Problems::default();
    for class in ordered.iter().filter(|c| c.source.is_admin()) {
        if let Some(cni) = &class.config.cni
            && !cni.plugin_overrides.is_empty()
        {
            problems.extend(
                ConfigError::single(
                    "cni.pluginOverrides",
                    "only claim configs set pluginOverrides; a class writes its network's \
                     fields in the network itself",
                )
                .in_context(&class.label()),
            );
        }
    }
    for claim in ordered.iter().filter(|c| c.source == ConfigSource::Claim) {
        let mut claim_problems = Problems::default();
        check_claim_config(&mut claim_problems, &grants, &claim.config);
        if let Err(error) = claim_problems.into_result() {
            problems.extend(error.in_context(&claim.label()));
        }
    }
    problems.into_result()
}

fn check_claim_config(problems: &mut Problems, grants: &Grants, config: &NetworkConfig) {
    let only = || {
        format!(
            "the DeviceClass defines the CNI network and lets claims override only [{}]",
            grants.override_names()
        )
    };
    if grants.owns_network {
        if config.interface.name.is_some()
            && !grants.overrides.contains(&CniOverride::InterfaceName)
        {
            problems.push("interface.name", only());
        }
        for field in crate::validate::static_fields_set(&config.interface) {
            problems.push(format!("interface.{field}"), only());
        }
    }
    let Some(cni) = &config.cni else {
        return;
    };
    if !cni.claim_may_override.is_empty() {
        problems.push(
            "cni.claimMayOverride",
            "only a DeviceClass config says what claims may override",
        );
    }
    if cni.claim_may_bring.is_some() {
        problems.push(
            "cni.claimMayBring",
            "only a DeviceClass config says which networks claims may bring",
        );
    }
    // One error for an inline network, at its first field set (`plugins` when it has any).
    let inline_field = [
        ("cni.plugins", !cni.plugins.is_empty()),
        ("cni.cniVersion", cni.cni_version.is_some()),
        ("cni.name", cni.name.is_some()),
    ]
    .into_iter()
    .find_map(|(field, is_set)| is_set.then_some(field));
    if let Some(field) = inline_field
        && !grants.bring.inline
    {
        problems.push(field, grants.refuse_network("inline"));
    }
    if cni.network_attachment_definition.is_some()
        && grants.bring.network_attachment_definition.is_none()
    {
        problems.push(
            "cni.networkAttachmentDefinition",
            grants.refuse_network("networkAttachmentDefinition"),
        );
    }
    if let Some(field) = &cni.device_field {
        let brings_granted_network = (cni.has_inline_network() && grants.bring.inline)
            || (cni.network_attachment_definition.is_some()
                && grants.bring.network_attachment_definition.is_some());
        if !brings_granted_network && !grants.overrides.contains(&CniOverride::DeviceField) {
            let why = if grants.owns_network {
                only()
            } else {
                "a claim sets cni.deviceField only for a network it may bring".to_owned()
            };
            problems.push("cni.deviceField", why);
        } else if is_path_key(field)
            || crate::policy::RUNTIME_KEYS
                .iter()
                .any(|key| crate::policy::key_is(field, key))
        {
            problems.push(
                "cni.deviceField",
                format!(
                    "{field:?} names a node path or a runtime key; a claim may not have the \
                     device written there"
                ),
            );
        }
    }
    for key in cni.plugin_overrides.keys() {
        // Unparsable paths were refused when the config was validated alone.
        if let Ok(field) = key.parse::<PluginFieldPath>()
            && !grants.grants_plugin_field(&field)
        {
            problems.push(
                format!("cni.pluginOverrides[{key:?}]"),
                format!(
                    "the DeviceClass lets claims override only [{}]",
                    grants.override_names()
                ),
            );
        }
    }
}

/// Lays a later `cni` section over `base`: a named network replaces the earlier one whole.
fn overlay_cni(base: &mut CniConfig, later: &CniConfig) {
    if later.has_network() {
        base.cni_version.clone_from(&later.cni_version);
        base.name.clone_from(&later.name);
        base.plugins.clone_from(&later.plugins);
        base.network_attachment_definition
            .clone_from(&later.network_attachment_definition);
    }
    overlay_option(&mut base.device_field, &later.device_field);
    for granted in &later.claim_may_override {
        if !base.claim_may_override.contains(granted) {
            base.claim_may_override.push(granted.clone());
        }
    }
    if let Some(bring) = &later.claim_may_bring {
        base.claim_may_bring
            .get_or_insert_with(ClaimMayBring::default)
            .union(bring);
    }
    for (path, value) in &later.plugin_overrides {
        base.plugin_overrides.insert(path.clone(), value.clone());
    }
}

/// Lays `later` over `base`: set options and non-empty collections of `later` win.
fn overlay_interface(base: &mut InterfaceConfig, later: &InterfaceConfig) {
    overlay_option(&mut base.name, &later.name);
    overlay_option(&mut base.mtu, &later.mtu);
    overlay_option(&mut base.hardware_address, &later.hardware_address);
    overlay_vec(&mut base.addresses, &later.addresses);
    overlay_vec(&mut base.routes, &later.routes);
    overlay_vec(&mut base.rules, &later.rules);
    overlay_vec(&mut base.neighbors, &later.neighbors);
    if let Some(later_sysctls) = &later.sysctls {
        overlay_sysctls(
            base.sysctls.get_or_insert_with(Sysctls::default),
            later_sysctls,
        );
    }
    if !later.ethtool_features.is_empty() {
        base.ethtool_features = later.ethtool_features.clone();
    }
}

fn overlay_sysctls(base: &mut Sysctls, later: &Sysctls) {
    overlay_option(&mut base.arp_ignore, &later.arp_ignore);
    overlay_option(&mut base.arp_announce, &later.arp_announce);
    overlay_option(&mut base.forwarding, &later.forwarding);
}

fn overlay_option<T: Clone>(base: &mut Option<T>, later: &Option<T>) {
    if later.is_some() {
        base.clone_from(later);
    }
}

fn overlay_vec<T: Clone>(base: &mut Vec<T>, later: &[T]) {
    if !later.is_empty() {
        *base = later.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sourced(source: ConfigSource, requests: &[&str], index: usize) -> SourcedConfig {
        SourcedConfig {
            source,
            requests: requests.iter().map(|r| r.to_string()).collect(),
            index,
            config: NetworkConfig::for_interface(InterfaceConfig::default()),
        }
    }

    #[test]
    fn request_scoping() {
        let all_requests = sourced(ConfigSource::Class, &[], 0);
        assert!(all_requests.applies_to("anything"));
        let nic = sourced(ConfigSource::Claim, &["nic"], 0);
        assert!(nic.applies_to("nic"));
        assert!(nic.applies_to("nic/fast"));
        assert!(!nic.applies_to("nic2"));
        assert!(!nic.applies_to("nicx/fast"));
        assert!(!nic.applies_to("other"));
        let sub = sourced(ConfigSource::Claim, &["nic/fast"], 0);
        assert!(sub.applies_to("nic/fast"));
        assert!(!sub.applies_to("nic"));
        assert!(!sub.applies_to("nic/slow"));
    }

    #[test]
    fn labels() {
        assert_eq!(
            sourced(ConfigSource::Class, &[], 2).label(),
            "class config[2]"
        );
        assert_eq!(
            sourced(ConfigSource::Claim, &["a", "b"], 1).label(),
            "claim config[1] (requests [a, b])"
        );
    }

    #[test]
    fn nothing_merges_into_an_empty_valid_config() {
        let merged = merge_configs::<SourcedConfig>(&[]).unwrap();
        assert_eq!(
            merged,
            NetworkConfig::for_interface(InterfaceConfig::default())
        );
    }
}
