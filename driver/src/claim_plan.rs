//! What prepare would make of one request of a claim, worked out offline for
//! `netclaim validate` and `netclaim explain`: the DeviceClass's and the claim's opaque
//! configs merged as prepare merges them ([`netclaim_api::merge`], with the class's grants
//! of [`netclaim_api::policy`]), and in CNI mode the network that would run, checked as
//! prepare checks it (a claim-side network's node paths and host devices, plugin
//! overrides, the plugin allowlist). NetworkAttachmentDefinitions come from the caller
//! (files or the API); one that is not available is a note, not an error.
//!
//! Not covered here, because they need the node: the host NIC (its MTU limit, whether it
//! is a shared parent) and the device substitution, which `explain` does per device.

use k8s_openapi::api::resource::v1::{DeviceClaim, DeviceClass, DeviceSelector};
use netclaim_api::policy::{NetworkAuthor, check_claim_network, reference_namespace};
use netclaim_api::{
    CniNetworkList, ConfigError, ConfigSource, NetworkConfig, PluginAllowlist, SourcedConfig,
    merge_for_request, network_source,
};
use serde_json::Value;

/// Where a finding is: which config, the merged result, or a NetworkAttachmentDefinition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Site {
    /// `spec.config[N]` of the DeviceClass.
    ClassConfig(usize),
    /// `spec.devices.config[N]` of the claim.
    ClaimConfig(usize),
    /// The config of the device's PodNetwork (prepare merges it first; validate and
    /// explain do not read PodNetworks, so they never produce this site themselves).
    PodNetworkConfig(usize),
    /// The configs together (a conflict between them, or what the merge lacks).
    Merged,
    /// A NetworkAttachmentDefinition's `spec.config`.
    Nad {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// One problem prepare would report for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Where it is.
    pub site: Site,
    /// The field below the site (`interface.mtu`, `cni.plugins[0].type`; for a NAD
    /// `spec.config: plugins[0].type`); may be empty.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Where the network of a CNI-mode request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkOrigin {
    /// Written inline in a config.
    Inline(Site),
    /// A NetworkAttachmentDefinition.
    Nad {
        /// Its namespace (the claim's when the reference leaves it out).
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// The network a CNI-mode request would run.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPlan {
    /// Where it comes from.
    pub origin: NetworkOrigin,
    /// The list with the claim's plugin overrides applied (the allocated device is written
    /// in per device); `None` when the NAD was not available to read.
    pub list: Option<CniNetworkList>,
}

/// What prepare would make of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestPlan {
    /// The merged config.
    pub merged: NetworkConfig,
    /// In CNI mode, the network.
    pub network: Option<NetworkPlan>,
    /// What could not be checked, and why.
    pub notes: Vec<String>,
}

/// Parses the `netclaim.dev` opaque configs of an object's config list: each entry's
/// `(index in the list, requests, parameters)`.
///
/// # Errors
/// The parse problems of each config, as findings at its site.
pub fn parse_configs(
    source: ConfigSource,
    entries: &[(usize, Vec<String>, &Value)],
) -> Result<Vec<SourcedConfig>, Vec<Finding>> {
    let mut configs = Vec::new();
    let mut findings = Vec::new();
    for (index, requests, parameters) in entries {
        let site = match source {
            ConfigSource::Class => Site::ClassConfig(*index),
            ConfigSource::Claim => Site::ClaimConfig(*index),
            ConfigSource::Network => Site::PodNetworkConfig(*index),
        };
        let raw = match serde_json::to_vec(parameters) {
            Ok(raw) => raw,
            Err(error) => {
                findings.push(Finding {
                    site,
                    path: String::new(),
                    message: error.to_string(),
                });
                continue;
            }
        };
        match netclaim_api::parse_config(&raw) {
            Ok(config) => configs.push(SourcedConfig {
                source,
                requests: requests.clone(),
                index: *index,
                config,
            }),
            Err(error) => findings.extend(error.errors.into_iter().map(|e| Finding {
                site: site.clone(),
                path: e.path,
                message: e.message,
            })),
        }
    }
    if findings.is_empty() {
        Ok(configs)
    } else {
        Err(findings)
    }
}

/// Works out `request` (`main` or `main/sub`) with the class's and the claim's configs,
/// for a claim in `claim_namespace`; `nads` returns a NetworkAttachmentDefinition object
/// when it is available.
///
/// # Errors
/// What prepare would refuse, as findings.
pub fn plan_request(
    class_configs: &[SourcedConfig],
    claim_configs: &[SourcedConfig],
    request: &str,
    claim_namespace: &str,
    nads: &dyn Fn(&str, &str) -> Option<Value>,
    allowed: &PluginAllowlist,
) -> Result<RequestPlan, Vec<Finding>> {
    let all: Vec<SourcedConfig> = class_configs
        .iter()
        .map(|c| SourcedConfig {
            requests: Vec::new(),
            ..c.clone()
        })
        .chain(claim_configs.iter().cloned())
        .collect();
    let merged = merge_for_request(&all, request).map_err(labelled_findings)?;
    let mut notes = Vec::new();
    let Some(cni) = &merged.cni else {
        return Ok(RequestPlan {
            merged,
            network: None,
            notes,
        });
    };
    let source = network_source(&all, request);
    let chooser = source.map_or(ConfigSource::Claim, |s| s.source);
    let source_site = source.map_or(Site::Merged, site_of);
    let (origin, list, author) = match &cni.network_attachment_definition {
        Some(reference) => {
            let namespace = reference_namespace(reference, claim_namespace).to_owned();
            let name = reference.name.clone();
            if chooser == ConfigSource::Claim {
                let grant = cni
                    .claim_may_bring
                    .as_ref()
                    .and_then(|bring| bring.network_attachment_definition.as_ref());
                if let Some(grant) = grant
                    && !grant.permits(claim_namespace, &namespace)
                {
                    return Err(vec![Finding {
                        site: source_site,
                        path: "cni.networkAttachmentDefinition.namespace".into(),
                        message: format!(
                            "{namespace:?} is not the claim's namespace ({claim_namespace}), \
                             and the DeviceClass lets claims name NetworkAttachmentDefinitions \
                             only in: {}",
                            grant.describe()
                        ),
                    }]);
                }
            }
            let author = NetworkAuthor::of(chooser, Some(&namespace), claim_namespace);
            let nad_site = Site::Nad {
                namespace: namespace.clone(),
                name: name.clone(),
            };
            let list = match nads(&namespace, &name) {
                Some(object) => Some(
                    CniNetworkList::from_network_attachment_definition(&object)
                        .map_err(|error| findings_at(&nad_site, "", error))?,
                ),
                None => {
                    notes.push(format!(
                        "NetworkAttachmentDefinition {namespace}/{name} was not given, so its \
                         network was not checked"
                    ));
                    None
                }
            };
            (NetworkOrigin::Nad { namespace, name }, list, author)
        }
        None => {
            let Some(list) = cni.inline_network() else {
                return Err(vec![Finding {
                    site: Site::Merged,
                    path: "cni".into(),
                    message: "the merged config names no complete network (cniVersion, name, \
                              plugins)"
                        .into(),
                }]);
            };
            let author = NetworkAuthor::of(chooser, None, claim_namespace);
            (NetworkOrigin::Inline(source_site), Some(list), author)
        }
    };
    let Some(list) = list else {
        return Ok(RequestPlan {
            merged,
            network: Some(NetworkPlan { origin, list: None }),
            notes,
        });
    };
    // Errors about the network's contents: an inline network's under `cni.`, a NAD's under
    // `spec.config: `.
    let (content_site, content_prefix) = match &origin {
        NetworkOrigin::Inline(site) => (site.clone(), "cni."),
        NetworkOrigin::Nad { namespace, name } => (
            Site::Nad {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            "spec.config: ",
        ),
    };
    if author == NetworkAuthor::Claim {
        check_claim_network(&list, cni.device_field.as_deref())
            .map_err(|error| findings_at(&content_site, content_prefix, error))?;
    }
    let list = netclaim_api::policy::apply_plugin_overrides(&list, &cni.plugin_overrides)
        .map_err(|error| findings_at(&Site::Merged, "", error))?;
    netclaim_api::policy::check_plugins(&list, allowed)
        .map_err(|error| findings_at(&content_site, content_prefix, error))?;
    Ok(RequestPlan {
        merged,
        network: Some(NetworkPlan {
            origin,
            list: Some(list),
        }),
        notes,
    })
}

fn site_of(config: &SourcedConfig) -> Site {
    match config.source {
        ConfigSource::Class => Site::ClassConfig(config.index),
        ConfigSource::Claim => Site::ClaimConfig(config.index),
        ConfigSource::Network => Site::PodNetworkConfig(config.index),
    }
}

fn findings_at(site: &Site, prefix: &str, error: ConfigError) -> Vec<Finding> {
    error
        .errors
        .into_iter()
        .map(|e| Finding {
            site: site.clone(),
            path: if e.path.is_empty() {
                prefix.trim_end_matches([':', ' ', '.']).to_owned()
            } else {
                format!("{prefix}{}", e.path)
            },
            message: e.message,
        })
        .collect()
}

/// Turns the merge's errors, whose paths start with the config's label
/// (`claim config[1] (requests [nic]): interface.mtu`, `merged config: cni`), into
/// findings at their sites.
fn labelled_findings(error: ConfigError) -> Vec<Finding> {
    error
        .errors
        .into_iter()
        .map(|e| {
            let (site, path) = split_label(&e.path);
            Finding {
                site,
                path,
                message: e.message,
            }
        })
        .collect()
}

/// Splits a label-prefixed path into its site and the rest.
fn split_label(path: &str) -> (Site, String) {
    let rest_after_label = |text: &str| -> String {
        text.split_once(": ")
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_default()
    };
    type MakeSite = fn(usize) -> Site;
    let sites: [(&str, MakeSite); 3] = [
        ("class config[", Site::ClassConfig),
        ("claim config[", Site::ClaimConfig),
        ("podNetwork config[", Site::PodNetworkConfig),
    ];
    for (prefix, site) in sites {
        if let Some(after) = path.strip_prefix(prefix)
            && let Some((digits, _)) = after.split_once(']')
            && let Ok(index) = digits.parse::<usize>()
        {
            return (site(index), rest_after_label(after));
        }
    }
    match path.strip_prefix("merged config") {
        Some(rest) => (
            Site::Merged,
            rest.strip_prefix(": ").unwrap_or(rest).to_owned(),
        ),
        None => (Site::Merged, path.to_owned()),
    }
}

/// One request (or `firstAvailable` subrequest) of a claim, as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSpec {
    /// Its field path in the object (`spec.devices.requests[0]`,
    /// `spec.devices.requests[1].firstAvailable[0]`).
    pub path: String,
    /// Its name for configs and allocation results: `main` or `main/sub`.
    pub name: String,
    /// The DeviceClass it names.
    pub class: String,
    /// Its selectors: (field path of the expression, expression).
    pub selectors: Vec<(String, String)>,
    /// How many devices: `1`, `N`, or `all`.
    pub count: String,
}

/// The requests of a claim's `devices` (at `prefix`, such as `spec.devices`), subrequests
/// of `firstAvailable` each on their own in the order the scheduler tries them.
pub fn requests_of(devices: &DeviceClaim, prefix: &str) -> Vec<RequestSpec> {
    let mut specs = Vec::new();
    for (i, request) in devices.requests.iter().flatten().enumerate() {
        let path = format!("{prefix}.requests[{i}]");
        if let Some(exactly) = &request.exactly {
            specs.push(RequestSpec {
                path: format!("{path}.exactly"),
                name: request.name.clone(),
                class: exactly.device_class_name.clone(),
                selectors: selector_list(exactly.selectors.as_deref(), &format!("{path}.exactly")),
                count: count_text(exactly.allocation_mode.as_deref(), exactly.count),
            });
        }
        for (k, sub) in request.first_available.iter().flatten().enumerate() {
            let sub_path = format!("{path}.firstAvailable[{k}]");
            specs.push(RequestSpec {
                selectors: selector_list(sub.selectors.as_deref(), &sub_path),
                path: sub_path,
                name: format!("{}/{}", request.name, sub.name),
                class: sub.device_class_name.clone(),
                count: count_text(sub.allocation_mode.as_deref(), sub.count),
            });
        }
    }
    specs
}

fn selector_list(selectors: Option<&[DeviceSelector]>, path: &str) -> Vec<(String, String)> {
    selectors
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(j, selector)| {
            selector.cel.as_ref().map(|cel| {
                (
                    format!("{path}.selectors[{j}].cel.expression"),
                    cel.expression.clone(),
                )
            })
        })
        .collect()
}

fn count_text(mode: Option<&str>, count: Option<i64>) -> String {
    match mode {
        Some("All") => "all".to_owned(),
        _ => count.unwrap_or(1).to_string(),
    }
}

/// The `netclaim.dev` opaque configs of a claim: (index in `config`, requests, parameters).
pub fn claim_config_entries<'a>(
    devices: &'a DeviceClaim,
    driver: &str,
) -> Vec<(usize, Vec<String>, &'a Value)> {
    devices
        .config
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, entry)| {
            let opaque = entry.opaque.as_ref().filter(|o| o.driver == driver)?;
            Some((
                index,
                entry.requests.clone().unwrap_or_default(),
                &opaque.parameters.0,
            ))
        })
        .collect()
}

/// The `netclaim.dev` opaque configs of a DeviceClass: (index in `spec.config`, no
/// requests, parameters).
pub fn class_config_entries<'a>(
    class: &'a DeviceClass,
    driver: &str,
) -> Vec<(usize, Vec<String>, &'a Value)> {
    class
        .spec
        .iter()
        .flat_map(|spec| spec.config.iter().flatten())
        .enumerate()
        .filter_map(|(index, entry)| {
            let opaque = entry.opaque.as_ref().filter(|o| o.driver == driver)?;
            Some((index, Vec::new(), &opaque.parameters.0))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn labels_split_into_sites() {
        assert_eq!(
            split_label("claim config[1] (requests [a, b]): interface.mtu"),
            (Site::ClaimConfig(1), "interface.mtu".to_owned())
        );
        assert_eq!(
            split_label("class config[0]: cni.pluginOverrides"),
            (Site::ClassConfig(0), "cni.pluginOverrides".to_owned())
        );
        assert_eq!(
            split_label("merged config: cni"),
            (Site::Merged, "cni".to_owned())
        );
        assert_eq!(
            split_label("claim config[2]"),
            (Site::ClaimConfig(2), String::new())
        );
    }

    fn parse(source: ConfigSource, index: usize, json: Value) -> SourcedConfig {
        parse_configs(source, &[(index, Vec::new(), &json)])
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_claim_override_the_class_does_not_grant_is_found_at_the_claim_config() {
        let class = parse(
            ConfigSource::Class,
            0,
            serde_json::json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
                "cni": {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "macvlan"}]}}),
        );
        let claim = parse(
            ConfigSource::Claim,
            2,
            serde_json::json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
                "interface": {"name": "net1"}}),
        );
        let allowed = PluginAllowlist::default();
        let findings =
            plan_request(&[class], &[claim], "net", "default", &|_, _| None, &allowed).unwrap_err();
        assert_eq!(findings[0].site, Site::ClaimConfig(2));
        assert_eq!(findings[0].path, "interface.name");
    }

    #[test]
    fn a_nad_with_a_disallowed_plugin_is_found_in_the_nad() {
        let class = parse(
            ConfigSource::Class,
            0,
            serde_json::json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
                "cni": {"networkAttachmentDefinition": {"namespace": "net", "name": "br"}}}),
        );
        let nad = serde_json::json!({"spec": {"config":
            r#"{"cniVersion": "1.0.0", "name": "br", "plugins": [{"type": "bridge"}]}"#}});
        let allowed = PluginAllowlist::default();
        let findings = plan_request(
            &[class],
            &[],
            "net",
            "app",
            &|ns, name| (ns == "net" && name == "br").then(|| nad.clone()),
            &allowed,
        )
        .unwrap_err();
        assert_eq!(
            findings[0].site,
            Site::Nad {
                namespace: "net".into(),
                name: "br".into()
            }
        );
        assert_eq!(findings[0].path, "spec.config: plugins[0].type");
        assert!(findings[0].message.contains("bridge"), "{findings:?}");
    }
}
