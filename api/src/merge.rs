//! Which opaque configs apply to a request, and how they combine into one.
//!
//! A device's configuration can come from its DeviceClass (`spec.config`) and from the
//! ResourceClaim (`spec.devices.config`). Each entry may name the requests it applies to.
//!
//! # Precedence
//! 1. Only entries that apply to the request take part ([`configs_for_request`]): an entry
//!    with no `requests` applies to every request; otherwise it applies to the requests it
//!    names, and an entry naming `main` also applies to the subrequests `main/<sub>`.
//! 2. They are ordered: DeviceClass configs first, then claim configs; within each source by
//!    their position in the object's list (`index`). This is the order DRA gives them to
//!    drivers: the class sets defaults, the claim refines them.
//! 3. Later wins, field by field ([`merge_configs`]):
//!    - optional fields (`name`, `mtu`, `hardwareAddress`): a later value that is set wins;
//!    - `sysctls`: merged per sysctl, a later value that is set wins;
//!    - lists (`addresses`, `routes`, `rules`, `neighbors`) and the `ethtoolFeatures` map:
//!      a later non-empty one replaces the earlier one whole (they are not concatenated:
//!      an address list is meant as a whole).
//!
//! 4. CNI mode (`cni`, see [`crate::cni`]): a later `cni` section that names a network
//!    (inline or by reference) replaces the earlier network whole; a set `deviceField`
//!    wins; `claimMayOverride` is the union of the class configs' lists.
//! 5. When a DeviceClass config defines a CNI network, the class owns the network: a claim
//!    config may only set what the class configs list in `cni.claimMayOverride`
//!    (`interfaceName` for `interface.name`, `network`, `deviceField`). Anything else a
//!    claim sets is an error naming the claim config and the field
//!    (`claim config[0]: cni.plugins: ...`). `claimMayOverride` in a claim config is an
//!    error. With no class network, a claim may bring its own.
//!
//! A later config cannot unset an earlier value; write the wanted value instead.
//! Each config is validated on its own (so an error names the config to fix) and the
//! merged result is validated again (so conflicts between configs are caught).

use std::borrow::Borrow;
use std::fmt;

use std::collections::BTreeSet;

use crate::cni::{CniConfig, CniOverride};
use crate::config::{InterfaceConfig, NetworkConfig, Sysctls};
use crate::error::{ConfigError, Problems};

/// Where an opaque config came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigSource {
    /// The DeviceClass's `spec.config`; applied first.
    Class,
    /// The ResourceClaim's `spec.devices.config`; applied after the class's.
    Claim,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
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

/// Enforces the class's `claimMayOverride` on claim configs (rule 5 of the
/// [module docs](self)).
fn check_claim_overrides(ordered: &[&SourcedConfig]) -> Result<(), ConfigError> {
    let class_cni: Vec<&CniConfig> = ordered
        .iter()
        .filter(|c| c.source == ConfigSource::Class)
        .filter_map(|c| c.config.cni.as_ref())
        .collect();
    let class_owns_network = class_cni.iter().any(|cni| cni.has_network());
    let granted: BTreeSet<CniOverride> = class_cni.iter().flat_map(|cni| cni.granted()).collect();
    let granted_names: Vec<&str> = granted.iter().map(|o| o.as_str()).collect();
    let mut problems = Problems::default();
    for claim in ordered.iter().filter(|c| c.source == ConfigSource::Claim) {
        let mut claim_problems = Problems::default();
        let config = &claim.config;
        if let Some(cni) = &config.cni
            && !cni.claim_may_override.is_empty()
        {
            claim_problems.push(
                "cni.claimMayOverride",
                "only a DeviceClass config says what claims may override",
            );
        }
        if class_owns_network {
            let mut needs = |field: &str, wanted: Option<CniOverride>| {
                if wanted.is_none_or(|w| !granted.contains(&w)) {
                    claim_problems.push(
                        field,
                        format!(
                            "the DeviceClass defines the CNI network and lets claims override only [{}]",
                            granted_names.join(", ")
                        ),
                    );
                }
            };
            if config.interface.name.is_some() {
                needs("interface.name", Some(CniOverride::InterfaceName));
            }
            for field in crate::validate::static_fields_set(&config.interface) {
                needs(&format!("interface.{field}"), None);
            }
            if let Some(cni) = &config.cni {
                let network_fields = [
                    ("cni.cniVersion", cni.cni_version.is_some()),
                    ("cni.name", cni.name.is_some()),
                    ("cni.plugins", !cni.plugins.is_empty()),
                    (
                        "cni.networkAttachmentDefinition",
                        cni.network_attachment_definition.is_some(),
                    ),
                ];
                for (field, is_set) in network_fields {
                    if is_set {
                        needs(field, Some(CniOverride::Network));
                    }
                }
                if cni.device_field.is_some() {
                    needs("cni.deviceField", Some(CniOverride::DeviceField));
                }
            }
        }
        if let Err(error) = claim_problems.into_result() {
            problems.extend(error.in_context(&claim.label()));
        }
    }
    problems.into_result()
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
            base.claim_may_override.push(*granted);
        }
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
