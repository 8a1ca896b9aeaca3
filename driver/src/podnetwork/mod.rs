//! netclaim as a PodNetwork provider (the SIG Network multi-network API; types and rules in
//! [`netclaim_api::podnetwork`], the design in `docs/design.md`, "PodNetworks").
//!
//! - [`PodNetwork`]: the custom resource, for the kube client.
//! - [`NetworkSet`]: the PodNetworks of this provider as a node agent sees them, each with
//!   its compiled device selector and whether it is Ready; decides which network a device
//!   is in ([`NetworkSet::label`]) and, at prepare, which network's config a device gets
//!   or why it may not be prepared ([`NetworkSet::for_prepare`]).
//! - [`PodNetworks`]: the shared, swappable [`NetworkSet`] discovery and prepare read.
//! - [`agent`]: the node agent's watch (`netclaim run`): keeps [`PodNetworks`] current and
//!   makes discovery republish when it changes.
//! - [`controller`]: the one condition writer (`netclaim controller`): `Accepted`, `Ready`
//!   and `Conflicted` on every PodNetwork of this provider.
//!
//! # Guarantees
//! - A device carries `<driver>/podNetwork` only when exactly one Ready network selects
//!   it; a device two Ready networks select is in neither (the controller says so on
//!   both, condition `Conflicted`).
//! - A network is Ready for a node only when it is enabled and its `Ready` condition is
//!   `True` for the object's current generation (see [`netclaim_api::podnetwork::is_ready`]).
//! - Held devices (in pods) keep what they were published with: [`crate::discovery`]
//!   republishes them unchanged until they come back.

pub mod agent;
pub mod controller;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::resource::v1::{Device, DeviceAttribute};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use netclaim_api::podnetwork::{
    self, POD_NETWORK_ATTRIBUTE, PodNetworkParameters, PodNetworkSpec, PodNetworkStatus,
};
use netclaim_api::{ConfigError, FieldError, NetworkConfig};
use serde::{Deserialize, Serialize};

use crate::discovery::DeviceFilter;

/// A PodNetwork (`multinetwork.networking.k8s.io/v1alpha1`, cluster-scoped).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PodNetwork {
    /// `multinetwork.networking.k8s.io/v1alpha1`.
    #[serde(rename = "apiVersion", default = "api_version")]
    pub api_version: String,
    /// `PodNetwork`.
    #[serde(default = "kind")]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the admin asked for.
    #[serde(default)]
    pub spec: PodNetworkSpec,
    /// What the provider reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodNetworkStatus>,
}

fn api_version() -> String {
    podnetwork::API_VERSION.to_owned()
}

fn kind() -> String {
    podnetwork::KIND.to_owned()
}

impl kube::Resource for PodNetwork {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(podnetwork::KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(podnetwork::GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(podnetwork::VERSION)
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(podnetwork::API_VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(podnetwork::PLURAL)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl PodNetwork {
    /// The object's name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The plain-data view the API crate's rules take.
    pub fn as_object(&self) -> podnetwork::PodNetworkObject {
        let mut metadata = serde_json::json!({
            "name": self.metadata.name,
            "generation": self.metadata.generation,
        });
        if let Some(since) = &self.metadata.deletion_timestamp {
            metadata["deletionTimestamp"] = serde_json::json!(since);
        }
        podnetwork::PodNetworkObject {
            api_version: podnetwork::API_VERSION.to_owned(),
            kind: podnetwork::KIND.to_owned(),
            metadata,
            spec: self.spec.clone(),
            status: self.status.clone(),
        }
    }
}

/// What a PodNetwork's parameters mean to netclaim: the compiled device selector and the
/// network's config.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// Selects the network's devices (the `device` variable of `--filter`).
    pub selector: Arc<DeviceFilter>,
    /// What claims on the network get under their class's and their own config.
    pub config: Option<NetworkConfig>,
}

/// Parses `spec.parameters` strictly and compiles the device selector.
///
/// # Errors
/// Every problem, with paths from the object's root (`spec.parameters.devices: ...`).
pub fn parse(spec: &PodNetworkSpec, driver: &str) -> Result<Parsed, ConfigError> {
    let parameters = PodNetworkParameters::parse(spec.parameters.as_ref())?;
    let path = if parameters.devices.is_some() {
        "spec.parameters.devices"
    } else {
        "spec.parameters.name"
    };
    let selector = DeviceFilter::for_flag(path, &parameters.selector(driver)).map_err(|error| {
        ConfigError {
            errors: vec![FieldError::new(path, format!("{error:#}"))],
        }
    })?;
    Ok(Parsed {
        selector: Arc::new(selector),
        config: parameters.config,
    })
}

/// One PodNetwork of this provider, as a node agent sees it.
#[derive(Clone, Debug)]
pub struct KnownNetwork {
    /// Its name (the value of the `podNetwork` attribute).
    pub name: String,
    /// Its parameters, or why they are invalid.
    pub parsed: Result<Parsed, String>,
    /// `Ok` when new claims may use it; else why not (`AdministrativelyDisabled: ...`).
    pub ready: Result<(), String>,
}

impl KnownNetwork {
    /// What a node agent makes of `network`, for driver `driver`.
    pub fn of(network: &PodNetwork, driver: &str) -> Self {
        let parsed = parse(&network.spec, driver).map_err(|error| error.to_string());
        let ready = match &parsed {
            Err(why) => Err(format!("invalid parameters: {why}")),
            Ok(_) => podnetwork::is_ready(&network.as_object()),
        };
        Self {
            name: network.name().to_owned(),
            parsed,
            ready,
        }
    }

    fn selects(&self, driver: &str, device: &Device) -> bool {
        match &self.parsed {
            Ok(parsed) => parsed.selector.check(driver, device).is_ok(),
            Err(_) => false,
        }
    }
}

/// Which network a device is in, as [`NetworkSet::label`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Membership {
    /// No Ready network selects it.
    None,
    /// Exactly one Ready network selects it.
    One(String),
    /// Several Ready networks select it: it is in none of them.
    Conflict(Vec<String>),
}

/// The PodNetworks of this provider, by name.
#[derive(Clone, Debug, Default)]
pub struct NetworkSet {
    networks: BTreeMap<String, KnownNetwork>,
}

impl NetworkSet {
    /// The set of `networks` (PodNetworks of any provider: those of `provider` are kept).
    pub fn of<'a>(
        networks: impl IntoIterator<Item = &'a PodNetwork>,
        provider: &str,
        driver: &str,
    ) -> Self {
        Self {
            networks: networks
                .into_iter()
                .filter(|n| n.spec.provider == provider)
                .map(|n| (n.name().to_owned(), KnownNetwork::of(n, driver)))
                .collect(),
        }
    }

    /// The set of `networks` of `provider` without asking the API whether they are Ready:
    /// each enabled one with valid parameters counts as Ready (`netclaim devices
    /// --pod-networks`, which runs without a cluster).
    pub fn assuming_ready(networks: &[PodNetwork], provider: &str, driver: &str) -> Self {
        let networks = networks
            .iter()
            .filter(|n| n.spec.provider == provider)
            .map(|n| {
                let mut known = KnownNetwork::of(n, driver);
                known.ready = match (&known.parsed, n.spec.enabled) {
                    (Err(why), _) => Err(format!("invalid parameters: {why}")),
                    (Ok(_), false) => Err("AdministrativelyDisabled: spec.enabled is false".into()),
                    (Ok(_), true) => Ok(()),
                };
                (known.name.clone(), known)
            })
            .collect();
        Self { networks }
    }

    /// The networks, by name.
    pub fn networks(&self) -> &BTreeMap<String, KnownNetwork> {
        &self.networks
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The Ready networks selecting `device` (evaluated without its `podNetwork`).
    pub fn membership(&self, driver: &str, device: &Device) -> Membership {
        let device = without_network(device);
        let ready: Vec<String> = self
            .networks
            .values()
            .filter(|n| n.ready.is_ok() && n.selects(driver, &device))
            .map(|n| n.name.clone())
            .collect();
        match ready.len() {
            0 => Membership::None,
            1 => Membership::One(ready.into_iter().next().unwrap_or_default()),
            _ => Membership::Conflict(ready),
        }
    }

    /// Sets `device`'s `podNetwork` attribute from its [`Membership`] (removes it when the
    /// device is in no network), making room within the API's attribute limit by dropping
    /// the lowest-priority attribute when the device is full.
    pub fn label(&self, driver: &str, device: &mut Device) -> Membership {
        let membership = self.membership(driver, device);
        let attributes = device.attributes.get_or_insert_with(BTreeMap::new);
        attributes.remove(POD_NETWORK_ATTRIBUTE);
        match &membership {
            Membership::One(name) => {
                let used = attributes.len() + device.capacity.as_ref().map_or(0, BTreeMap::len);
                if used >= netclaim_api::attributes::MAX_ATTRIBUTES_PER_DEVICE
                    && let Some(lowest) = crate::discovery::attributes::ATTRIBUTE_PRIORITY
                        .iter()
                        .rev()
                        .find(|name| attributes.contains_key(**name))
                {
                    attributes.remove(*lowest);
                }
                attributes.insert(
                    POD_NETWORK_ATTRIBUTE.to_owned(),
                    DeviceAttribute {
                        string: Some(name.clone()),
                        ..DeviceAttribute::default()
                    },
                );
            }
            Membership::Conflict(names) => tracing::warn!(
                device = %device.name,
                networks = ?names,
                "the device matches several PodNetworks; it is published in none of them"
            ),
            Membership::None => {}
        }
        membership
    }

    /// The network a device being prepared belongs to, with its config.
    ///
    /// `published` is the device as this node publishes it now. The device's network is
    /// the one Ready network selecting it. A device that no Ready network selects but a
    /// network that is not Ready does (disabled, waiting for the controller, ...) is not
    /// prepared: the network's devices are withdrawn while it is not Ready, and a claim
    /// allocated just before must not get the device without the network. A device
    /// published with a network that no longer exists is refused for the same reason.
    ///
    /// # Errors
    /// Why the device may not be prepared, naming the network.
    pub fn for_prepare(
        &self,
        driver: &str,
        published: &Device,
    ) -> Result<Option<(String, Option<NetworkConfig>)>, String> {
        let device = without_network(published);
        let selecting: Vec<&KnownNetwork> = self
            .networks
            .values()
            .filter(|n| n.selects(driver, &device))
            .collect();
        let ready: Vec<&&KnownNetwork> = selecting.iter().filter(|n| n.ready.is_ok()).collect();
        match ready.as_slice() {
            [one] => {
                let config = one.parsed.as_ref().ok().and_then(|p| p.config.clone());
                return Ok(Some((one.name.clone(), config)));
            }
            [] => {}
            // In several networks: in none (published without the attribute).
            _ => return Ok(None),
        }
        if let Some(not_ready) = selecting.first() {
            let why = not_ready.ready.as_ref().err().cloned().unwrap_or_default();
            return Err(format!(
                "belongs to PodNetwork {}, which is not Ready ({why}); new pods are not \
                 attached to it",
                not_ready.name
            ));
        }
        if let Some(name) = network_attribute(published)
            && !self.networks.contains_key(name)
        {
            return Err(format!(
                "was published in PodNetwork {name}, which no longer exists"
            ));
        }
        Ok(None)
    }
}

/// The `podNetwork` attribute of a published device.
pub fn network_attribute(device: &Device) -> Option<&str> {
    device
        .attributes
        .as_ref()?
        .get(POD_NETWORK_ATTRIBUTE)?
        .string
        .as_deref()
}

/// The device as the filter sees it: without the attribute this module adds.
fn without_network(device: &Device) -> Cow<'_, Device> {
    if network_attribute(device).is_none() {
        return Cow::Borrowed(device);
    }
    let mut device = device.clone();
    if let Some(attributes) = device.attributes.as_mut() {
        attributes.remove(POD_NETWORK_ATTRIBUTE);
    }
    Cow::Owned(device)
}

/// The current [`NetworkSet`], shared by discovery, prepare and the agent's watch. Cheap to
/// clone.
#[derive(Clone, Debug, Default)]
pub struct PodNetworks {
    current: Arc<RwLock<Arc<NetworkSet>>>,
}

impl PodNetworks {
    /// The set now.
    pub fn current(&self) -> Arc<NetworkSet> {
        self.current
            .read()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |set| set.clone())
    }

    /// Replaces the set.
    pub fn replace(&self, set: NetworkSet) {
        let set = Arc::new(set);
        match self.current.write() {
            Ok(mut current) => *current = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network(name: &str, parameters: serde_json::Value, ready: bool) -> PodNetwork {
        serde_json::from_value(json!({
            "metadata": {"name": name, "generation": 1},
            "spec": {"provider": "netclaim.dev", "parameters": parameters},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                "reason": if ready {"Ready"} else {"AdministrativelyDisabled"}, "message": "",
                "observedGeneration": 1, "lastTransitionTime": "t"}]}
        }))
        .unwrap()
    }

    fn device(if_name: &str) -> Device {
        serde_json::from_value(json!({"name": format!("nic-{if_name}"),
            "attributes": {"ifName": {"string": if_name}}}))
        .unwrap()
    }

    #[test]
    fn one_ready_network_labels_two_label_none() {
        let blue = network("blue", json!({"name": "eth1"}), true);
        let red = network(
            "red",
            json!({"devices": "device.attributes[\"netclaim.dev\"].ifName.startsWith(\"eth\")"}),
            true,
        );
        let set = NetworkSet::of([&blue], "netclaim.dev", "netclaim.dev");
        let mut eth1 = device("eth1");
        assert_eq!(
            set.label("netclaim.dev", &mut eth1),
            Membership::One("blue".into())
        );
        assert_eq!(network_attribute(&eth1), Some("blue"));
        let both = NetworkSet::of([&blue, &red], "netclaim.dev", "netclaim.dev");
        assert_eq!(
            both.label("netclaim.dev", &mut eth1),
            Membership::Conflict(vec!["blue".into(), "red".into()])
        );
        assert_eq!(network_attribute(&eth1), None);
    }

    #[test]
    fn prepare_refuses_a_device_of_a_network_that_is_not_ready() {
        let blue = network("blue", json!({"name": "eth1"}), false);
        let set = NetworkSet::of([&blue], "netclaim.dev", "netclaim.dev");
        let why = set
            .for_prepare("netclaim.dev", &device("eth1"))
            .unwrap_err();
        assert!(why.contains("PodNetwork blue, which is not Ready"), "{why}");
        assert_eq!(set.for_prepare("netclaim.dev", &device("eth2")), Ok(None));
        let mut gone = device("eth3");
        NetworkSet::of(
            [&network("old", json!({"name": "eth3"}), true)],
            "netclaim.dev",
            "netclaim.dev",
        )
        .label("netclaim.dev", &mut gone);
        let why = set.for_prepare("netclaim.dev", &gone).unwrap_err();
        assert!(
            why.contains("PodNetwork old, which no longer exists"),
            "{why}"
        );
    }

    #[test]
    fn a_network_being_deleted_takes_no_new_claims_before_the_controller_says_so() {
        let mut blue = network("blue", json!({"name": "eth1"}), true);
        blue.metadata.deletion_timestamp =
            serde_json::from_value(json!("2026-12-02T00:00:00Z")).unwrap();
        let set = NetworkSet::of([&blue], "netclaim.dev", "netclaim.dev");
        let mut eth1 = device("eth1");
        assert_eq!(set.label("netclaim.dev", &mut eth1), Membership::None);
        let why = set
            .for_prepare("netclaim.dev", &device("eth1"))
            .unwrap_err();
        assert!(why.contains("Deleting"), "{why}");
    }

    #[test]
    fn a_bad_selector_is_a_field_error() {
        let spec: PodNetworkSpec = serde_json::from_value(
            json!({"provider": "netclaim.dev", "parameters": {"devices": "device.attributes[["}}),
        )
        .unwrap();
        let error = parse(&spec, "netclaim.dev").unwrap_err();
        assert_eq!(error.errors[0].path, "spec.parameters.devices");
    }
}
