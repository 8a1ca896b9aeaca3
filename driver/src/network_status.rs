//! The pod's `k8s.v1.cni.cncf.io/network-status` annotation (multi-network spec v1.2), kept
//! for the interfaces netclaim puts into pods.
//!
//! [`PodNetworks`] is what netclaim's part of one pod's annotation should be, derived from
//! the checkpoint alone ([`pod_networks`]): the entries of the pod's attached interfaces,
//! and the interface names netclaim owns in that pod (every interface of its claims,
//! attached or not, so entries of interfaces given back are removed). [`AnnotationApply`]
//! writes it: it GETs the pod, replaces only netclaim's entries and sends a JSON merge patch
//! carrying the `metadata.resourceVersion` it read. A
//! [`crate::level_writer::LevelWriter`] keeps writing the latest state until it is there.
//!
//! Which network an entry names:
//! - a device of a PodNetwork (either mode): the PodNetwork's name;
//! - static mode (netclaim moves the NIC itself): `<claim namespace>/<claim name>`, since
//!   the claim is what the user asked for the interface with, and it is unique in the
//!   cluster as a NetworkAttachmentDefinition's `<namespace>/<name>` is;
//! - CNI mode: `<namespace>/<name>` of the NetworkAttachmentDefinition, or for an inline
//!   network the `name` of its CNI network list (see [`cni_network_name`]).
//!
//! # Guarantees
//! - Entries netclaim does not own (the primary network, Multus attachments) are kept: the
//!   patch carries the `resourceVersion` it was computed from, so a concurrent writer makes
//!   it fail with 409 Conflict, and the pod is read again and the change recomputed.
//! - Only the pod with the UID the state was derived for is written: a pod recreated under
//!   the same name gets nothing from its predecessor.
//! - When no entry is left, the annotation is removed rather than left as `[]`.
//! - A pod whose annotation already says it is not written.
//!
//! # Errors
//! A missing or recreated pod ends the work for that pod. 409, 429, 5xx and transport
//! errors are retried by the writer; an annotation that is not a JSON list of objects is
//! left for its owner to fix (logged, and retried slowly in case its owner does).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::checkpoint::ClaimIndex;
use crate::cni::{self, CniDns, CniResult};
use crate::level_writer::{Applied, Apply};
use crate::state::{AttachPhase, PodRef, PreparedClaim, PreparedNic};

/// The pod annotation the Network Plumbing WG multi-network spec defines for attachments.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// One entry of the annotation (multi-network spec v1.2 format). Unknown fields are not
/// modelled: entries netclaim does not own are kept as raw JSON by
/// [`update_network_status`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatusEntry {
    /// The network: `<namespace>/<NetworkAttachmentDefinition name>`, or the CNI network
    /// name for an inline network.
    pub name: String,
    /// The interface name inside the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Its IP addresses, without prefix length (as the spec shows them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Whether this is the pod's default network (never for netclaim's interfaces).
    #[serde(default)]
    pub default: bool,
    /// DNS information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<CniDns>,
    /// Device information (`{"type": "pci", "version": "1.1.0", "pci": {"pci-address": ...}}`).
    #[serde(
        default,
        rename = "device-info",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<Value>,
}

impl NetworkStatusEntry {
    /// The entry for an interface a CNI network attached (from its ADD result).
    pub fn from_cni_result(
        network: &str,
        ifname: &str,
        result: &CniResult,
        pci_address: Option<&str>,
    ) -> Self {
        let data = cni::network_data(result, ifname);
        Self {
            name: network.to_owned(),
            interface: Some(ifname.to_owned()),
            ips: data
                .as_ref()
                .map(|d| d.ips.iter().map(|ip| ip.addr().to_string()).collect())
                .unwrap_or_default(),
            mac: data.and_then(|d| d.hardware_address),
            default: false,
            dns: (!result.dns.is_empty()).then(|| result.dns.clone()),
            device_info: pci_address.map(pci_device_info),
        }
    }

    /// The entry for an interface netclaim attached itself (static mode).
    pub fn from_static(
        network: &str,
        ifname: &str,
        ips: &[IpNet],
        mac: Option<&str>,
        pci_address: Option<&str>,
    ) -> Self {
        Self {
            name: network.to_owned(),
            interface: Some(ifname.to_owned()),
            ips: ips.iter().map(|ip| ip.addr().to_string()).collect(),
            mac: mac.map(str::to_owned),
            default: false,
            dns: None,
            device_info: pci_address.map(pci_device_info),
        }
    }
}

fn pci_device_info(pci_address: &str) -> Value {
    json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": pci_address}})
}

/// Why an annotation value cannot be updated.
#[derive(Debug, thiserror::Error)]
#[error("annotation {NETWORK_STATUS_ANNOTATION}: {0}")]
pub struct MalformedAnnotation(pub String);

/// Updates the annotation value: every entry whose `interface` is one of `owned` is
/// dropped, then `ours` are appended. Entries for other interfaces (the primary network,
/// Multus attachments) are kept as they were, byte for byte in content.
///
/// # Errors
/// [`MalformedAnnotation`] when `existing` is not a JSON list of objects: it is left for
/// its owner to fix rather than overwritten.
pub fn update_network_status(
    existing: Option<&str>,
    ours: &[NetworkStatusEntry],
    owned: &BTreeSet<String>,
) -> Result<String, MalformedAnnotation> {
    let mut entries: Vec<Value> = match existing.map(str::trim).filter(|s| !s.is_empty()) {
        None => Vec::new(),
        Some(text) => serde_json::from_str(text)
            .map_err(|error| MalformedAnnotation(format!("not a JSON list: {error}")))?,
    };
    if let Some(index) = entries.iter().position(|entry| !entry.is_object()) {
        return Err(MalformedAnnotation(format!(
            "entry {index} is not an object"
        )));
    }
    let replaced: BTreeSet<&str> = ours
        .iter()
        .filter_map(|entry| entry.interface.as_deref())
        .chain(owned.iter().map(String::as_str))
        .collect();
    entries.retain(|entry| {
        entry["interface"]
            .as_str()
            .is_none_or(|interface| !replaced.contains(interface))
    });
    for entry in ours {
        entries.push(serde_json::to_value(entry).map_err(|e| MalformedAnnotation(e.to_string()))?);
    }
    serde_json::to_string(&entries).map_err(|e| MalformedAnnotation(e.to_string()))
}

/// The network name of a static-mode interface: `<claim namespace>/<claim name>`.
pub fn static_network_name(claim: &PreparedClaim) -> String {
    claim.qualified_name()
}

/// The network name of a CNI-mode interface: `<namespace>/<name>` of the
/// NetworkAttachmentDefinition the network came from (as Multus names it), else the `name`
/// of the inline CNI network list stored in the prepared NIC. Empty when the NIC has
/// neither.
pub fn cni_network_name(nic: &PreparedNic) -> String {
    if let Some(nad) = &nic.network_attachment_definition {
        return nad.clone();
    }
    nic.cni
        .as_ref()
        .and_then(|list| list.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The entry of one attached NIC of `claim`, from what its attachment recorded: the CNI
/// result in CNI mode, else the interface, addresses and MAC netclaim set (with
/// `device-info` carrying the NIC's PCI address when it is a PCI function). `None` when
/// the NIC is not attached.
pub fn entry_for(claim: &PreparedClaim, nic: &PreparedNic) -> Option<NetworkStatusEntry> {
    let attachment = nic.attachment.as_ref()?;
    if attachment.phase != AttachPhase::Attached {
        return None;
    }
    let network = attachment.network.as_ref()?;
    let ifname = &network.data.interface_name;
    // A PodNetwork names the network cluster-wide: it is the name users look for.
    let name_of = |otherwise: String| nic.pod_network.clone().unwrap_or(otherwise);
    Some(match &network.cni_result {
        Some(raw) => {
            // ADD checked the result; only a corrupt record could give one that does not
            // parse, which then gives an entry without addresses.
            let result = cni::typed_result(raw).unwrap_or_default();
            let pci_address = result
                .interfaces
                .iter()
                .find(|interface| &interface.name == ifname && interface.sandbox.is_some())
                .and_then(|interface| interface.pci_id.clone());
            NetworkStatusEntry::from_cni_result(
                &name_of(cni_network_name(nic)),
                ifname,
                &result,
                pci_address.as_deref(),
            )
        }
        None => NetworkStatusEntry::from_static(
            &name_of(static_network_name(claim)),
            ifname,
            &network.data.ips,
            network.data.hardware_address.as_deref(),
            nic.pci_address.as_deref(),
        ),
    })
}

/// What netclaim's part of one pod's annotation should be.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodNetworks {
    /// The pod.
    pub pod: PodRef,
    /// Interface names netclaim owns in the pod: their entries are netclaim's to replace
    /// or remove.
    pub owned: BTreeSet<String>,
    /// The entries netclaim's attached interfaces should have, by interface name.
    pub entries: BTreeMap<String, NetworkStatusEntry>,
}

impl PodNetworks {
    /// `newer`, still owning what `self` (not written yet) owned: an interface given back
    /// while an earlier state waited must still lose its entry.
    pub fn merged_with(&self, newer: PodNetworks) -> PodNetworks {
        let mut merged = newer;
        merged.owned.extend(self.owned.iter().cloned());
        merged
    }
}

/// What netclaim's part of `pod`'s annotation should be, from the prepared claims in
/// `index`.
pub fn pod_networks(index: &ClaimIndex, pod: &PodRef) -> PodNetworks {
    let mut networks = PodNetworks {
        pod: pod.clone(),
        ..PodNetworks::default()
    };
    for claim in index.claims_for_pod(&pod.uid) {
        for nic in &claim.nics {
            networks.owned.insert(nic.pod_if_name().to_owned());
            let in_this_pod = nic
                .attachment
                .as_ref()
                .and_then(|a| a.pod.as_ref())
                .is_some_and(|p| p.uid == pod.uid);
            if in_this_pod && let Some(entry) = entry_for(claim, nic) {
                let interface = entry.interface.clone().unwrap_or_default();
                networks.owned.insert(interface.clone());
                networks.entries.insert(interface, entry);
            }
        }
    }
    networks
}

/// Why a pod's annotation is left as it is.
#[derive(Debug, thiserror::Error)]
pub enum Skip {
    /// The pod of that name has another UID: the one the state was for is gone.
    #[error("the pod was recreated (UID {found}, the state was for {expected})")]
    Recreated {
        /// The UID the state was derived for.
        expected: String,
        /// The UID of the pod found.
        found: String,
    },
    /// The annotation is not what the multi-network spec defines.
    #[error(transparent)]
    Annotation(#[from] MalformedAnnotation),
}

/// The merge patch that makes `pod`'s annotation say `networks`, with the pod's
/// `resourceVersion` as precondition; `None` when the annotation already says that.
///
/// # Errors
/// [`Skip`] when the pod is not the one of `networks` or its annotation is malformed.
pub fn annotation_patch(pod: &Pod, networks: &PodNetworks) -> Result<Option<Value>, Skip> {
    let found = pod.metadata.uid.clone().unwrap_or_default();
    if found != networks.pod.uid {
        return Err(Skip::Recreated {
            expected: networks.pod.uid.clone(),
            found,
        });
    }
    let existing = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(NETWORK_STATUS_ANNOTATION));
    let ours: Vec<NetworkStatusEntry> = networks.entries.values().cloned().collect();
    let updated = update_network_status(existing.map(String::as_str), &ours, &networks.owned)?;
    let updated_entries: Vec<Value> = serde_json::from_str(&updated).unwrap_or_default();
    let new_value = (!updated_entries.is_empty()).then_some(updated);
    let unchanged = match (existing, &new_value) {
        (None, None) => true,
        (Some(old), Some(new)) => {
            serde_json::from_str::<Value>(old).ok() == serde_json::from_str::<Value>(new).ok()
        }
        _ => false,
    };
    if unchanged {
        return Ok(None);
    }
    let mut metadata = json!({ "annotations": { NETWORK_STATUS_ANNOTATION: new_value } });
    if let Some(version) = &pod.metadata.resource_version {
        metadata["resourceVersion"] = json!(version);
    }
    Ok(Some(json!({ "metadata": metadata })))
}

/// Writes a [`PodNetworks`] into its pod (see the [module docs](self)).
pub struct AnnotationApply {
    client: kube::Client,
}

impl AnnotationApply {
    /// Writes with `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl Apply<String, PodNetworks> for AnnotationApply {
    fn name(&self) -> &'static str {
        "network-status"
    }

    async fn apply(&self, _pod_uid: &String, networks: &PodNetworks) -> Applied {
        let pod_name = format!("{}/{}", networks.pod.namespace, networks.pod.name);
        if networks.pod.name.is_empty() {
            // A record of netclaim 0.1 does not name its pods.
            return Applied::Gone;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &networks.pod.namespace);
        let pod = match api.get(&networks.pod.name).await {
            Ok(pod) => pod,
            Err(error) => return crate::status::classify(&error, &pod_name),
        };
        let patch = match annotation_patch(&pod, networks) {
            Ok(Some(patch)) => patch,
            Ok(None) => return Applied::Done,
            Err(Skip::Recreated { .. }) => {
                tracing::debug!(pod = %pod_name, "pod recreated; leaving its network status alone");
                return Applied::Gone;
            }
            Err(Skip::Annotation(malformed)) => {
                tracing::warn!(pod = %pod_name, "not writing the network status: {malformed}");
                return Applied::Retry(malformed.to_string());
            }
        };
        match api
            .patch(
                &networks.pod.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Applied::Done,
            Err(error) => crate::status::classify(&error, &pod_name),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::{AttachedNetwork, Attachment, LinkSnapshot, NetworkData};

    fn pod_ref() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-1".into(),
        }
    }

    fn pod(uid: &str, annotation: Option<&str>) -> Pod {
        let mut object = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": uid, "resourceVersion": "7"}
        });
        if let Some(annotation) = annotation {
            object["metadata"]["annotations"] = json!({ NETWORK_STATUS_ANNOTATION: annotation });
        }
        serde_json::from_value(object).unwrap()
    }

    fn entry(interface: &str, ip: &str) -> NetworkStatusEntry {
        NetworkStatusEntry::from_static(
            "default/nic-a",
            interface,
            &[ip.parse().unwrap()],
            Some("02:00:00:00:00:01"),
            None,
        )
    }

    fn networks(entries: &[NetworkStatusEntry], owned: &[&str]) -> PodNetworks {
        PodNetworks {
            pod: pod_ref(),
            owned: owned.iter().map(|s| (*s).to_owned()).collect(),
            entries: entries
                .iter()
                .map(|e| (e.interface.clone().unwrap(), e.clone()))
                .collect(),
        }
    }

    fn annotation_of(patch: &Value) -> Value {
        let text = patch["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION].clone();
        match text.as_str() {
            Some(text) => serde_json::from_str(text).unwrap(),
            None => text,
        }
    }

    const PRIMARY: &str =
        r#"[{"name":"cbr0","interface":"eth0","ips":["10.0.0.5"],"default":true}]"#;

    #[test]
    fn the_update_keeps_foreign_entries_and_replaces_owned_ones() {
        let existing = r#"[{"name":"cbr0","interface":"eth0","ips":["10.0.0.5"],"default":true,"x-extra":1},
                           {"name":"old","interface":"net1","ips":["192.0.2.9"]}]"#;
        let ours = NetworkStatusEntry::from_static(
            "netclaim/fast",
            "net1",
            &["192.0.2.10/24".parse().unwrap()],
            Some("02:00:00:00:00:03"),
            Some("0000:03:00.0"),
        );
        let updated = update_network_status(Some(existing), &[ours], &BTreeSet::new()).unwrap();
        let parsed: Vec<Value> = serde_json::from_str(&updated).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0]["x-extra"], 1);
        assert_eq!(parsed[1]["ips"], json!(["192.0.2.10"]));
        assert_eq!(
            parsed[1]["device-info"]["pci"]["pci-address"],
            "0000:03:00.0"
        );
        let owned: BTreeSet<String> = ["net1".to_owned()].into();
        let removed = update_network_status(Some(&updated), &[], &owned).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<Value>>(&removed).unwrap().len(),
            1
        );
        let error = update_network_status(Some("{}"), &[], &owned).unwrap_err();
        assert!(error.to_string().contains("not a JSON list"), "{error}");
        let error = update_network_status(Some("[1]"), &[], &owned).unwrap_err();
        assert!(
            error.to_string().contains("entry 0 is not an object"),
            "{error}"
        );
    }

    #[test]
    fn the_patch_keeps_foreign_entries_and_carries_the_resource_version() {
        let state = networks(&[entry("net1", "192.0.2.10/24")], &["net1"]);
        let patch = annotation_patch(&pod("uid-1", Some(PRIMARY)), &state)
            .unwrap()
            .unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        let entries = annotation_of(&patch);
        assert_eq!(entries[0]["interface"], "eth0");
        assert_eq!(entries[0]["default"], true);
        assert_eq!(entries[1]["name"], "default/nic-a");
        assert_eq!(entries[1]["interface"], "net1");
        assert_eq!(entries[1]["ips"], json!(["192.0.2.10"]));
        assert_eq!(entries[1]["mac"], "02:00:00:00:00:01");
    }

    #[test]
    fn nothing_to_write_when_the_annotation_already_says_it() {
        let state = networks(&[entry("net1", "192.0.2.10/24")], &["net1"]);
        let patch = annotation_patch(&pod("uid-1", Some(PRIMARY)), &state)
            .unwrap()
            .unwrap();
        let written = patch["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION]
            .as_str()
            .unwrap();
        assert_eq!(
            annotation_patch(&pod("uid-1", Some(written)), &state).unwrap(),
            None
        );
        let remove = networks(&[], &["net1"]);
        assert_eq!(
            annotation_patch(&pod("uid-1", None), &remove).unwrap(),
            None
        );
    }

    #[test]
    fn removal_keeps_others_and_deletes_an_annotation_left_empty() {
        let remove = networks(&[], &["net1"]);
        let both =
            r#"[{"name":"cbr0","interface":"eth0"},{"name":"default/nic-a","interface":"net1"}]"#;
        let patch = annotation_patch(&pod("uid-1", Some(both)), &remove)
            .unwrap()
            .unwrap();
        assert_eq!(
            annotation_of(&patch),
            json!([{"name":"cbr0","interface":"eth0"}])
        );
        let ours_only = r#"[{"name":"default/nic-a","interface":"net1"}]"#;
        let patch = annotation_patch(&pod("uid-1", Some(ours_only)), &remove)
            .unwrap()
            .unwrap();
        assert_eq!(
            patch["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION],
            Value::Null,
            "a merge patch null removes the annotation"
        );
    }

    #[test]
    fn a_recreated_pod_and_a_malformed_annotation_are_left_alone() {
        let state = networks(&[entry("net1", "192.0.2.10/24")], &["net1"]);
        let recreated = annotation_patch(&pod("uid-2", None), &state).unwrap_err();
        assert!(
            matches!(&recreated, Skip::Recreated { expected, found } if expected == "uid-1" && found == "uid-2"),
            "{recreated}"
        );
        let malformed =
            annotation_patch(&pod("uid-1", Some(r#"{"not":"a list"}"#)), &state).unwrap_err();
        assert!(matches!(malformed, Skip::Annotation(_)), "{malformed}");
    }

    #[test]
    fn a_pending_removal_survives_a_newer_state() {
        let pending = networks(&[], &["net1", "net2"]);
        let newer = networks(&[entry("net1", "192.0.2.20/24")], &["net1"]);
        let merged = pending.merged_with(newer);
        assert!(merged.owned.contains("net2"));
        let two = r#"[{"name":"x","interface":"net1"},{"name":"y","interface":"net2"}]"#;
        let patch = annotation_patch(&pod("uid-1", Some(two)), &merged)
            .unwrap()
            .unwrap();
        let entries = annotation_of(&patch);
        assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
        assert_eq!(entries[0]["ips"], json!(["192.0.2.20"]));
    }

    fn attached_nic(cni_result: Option<Value>) -> PreparedNic {
        let mut nic: PreparedNic = serde_json::from_value(json!({
            "request": "nic", "pool": "node-a", "device": "ens1f0", "hostIfName": "ens1f0",
            "pciAddress": "0000:03:00.0", "config": {"name": "net1"}
        }))
        .unwrap();
        nic.attachment = Some(Attachment {
            sandbox_id: "s".into(),
            netns_path: "/run/netns/p".into(),
            host: LinkSnapshot::default(),
            pod_if_name: "net1".into(),
            phase: AttachPhase::Attached,
            pod: Some(pod_ref()),
            network: Some(AttachedNetwork {
                data: NetworkData {
                    interface_name: "net1".into(),
                    ips: vec![
                        "192.0.2.10/24".parse().unwrap(),
                        "2001:db8::10/64".parse().unwrap(),
                    ],
                    hardware_address: Some("02:00:00:00:00:0a".into()),
                },
                cni_result,
                since: "2026-01-01T00:00:00Z".into(),
                late: false,
            }),
            error: None,
        });
        nic
    }

    fn claim_with(nics: Vec<PreparedNic>) -> PreparedClaim {
        PreparedClaim {
            uid: "claim-1".into(),
            namespace: "team-a".into(),
            name: "fast-nic".into(),
            pods: vec![pod_ref()],
            pod_claim_name: None,
            nics,
        }
    }

    #[test]
    fn static_entries_name_the_claim_and_carry_the_pci_address() {
        let nic = attached_nic(None);
        let claim = claim_with(vec![nic.clone()]);
        let entry = entry_for(&claim, &nic).unwrap();
        assert_eq!(entry.name, "team-a/fast-nic");
        assert_eq!(entry.interface.as_deref(), Some("net1"));
        assert_eq!(entry.ips, ["192.0.2.10", "2001:db8::10"]);
        let value = serde_json::to_value(&entry).unwrap();
        assert_eq!(value["device-info"]["pci"]["pci-address"], "0000:03:00.0");
        let without_pci = PreparedNic {
            pci_address: None,
            ..nic
        };
        let value = serde_json::to_value(entry_for(&claim, &without_pci).unwrap()).unwrap();
        assert!(value.get("device-info").is_none(), "{value}");
    }

    #[test]
    fn cni_entries_name_the_network_and_take_the_result() {
        let raw = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:09", "sandbox": "/run/netns/p",
                            "pciID": "0000:03:00.1"}],
            "ips": [{"address": "192.0.2.50/24", "interface": 0}],
            "dns": {"nameservers": ["192.0.2.53"]}
        });
        let mut nic = attached_nic(Some(raw));
        nic.cni = Some(
            json!({"cniVersion": "1.0.0", "name": "macnet", "plugins": [{"type": "macvlan"}]}),
        );
        let claim = claim_with(vec![nic.clone()]);
        let entry = entry_for(&claim, &nic).unwrap();
        assert_eq!(entry.name, "macnet");
        assert_eq!(entry.ips, ["192.0.2.50"]);
        assert_eq!(entry.mac.as_deref(), Some("02:00:00:00:00:09"));
        let value = serde_json::to_value(&entry).unwrap();
        assert_eq!(value["device-info"]["pci"]["pci-address"], "0000:03:00.1");
        assert_eq!(value["dns"]["nameservers"], json!(["192.0.2.53"]));
        let from_nad = PreparedNic {
            network_attachment_definition: Some("net-ns/macnet".into()),
            ..nic
        };
        assert_eq!(entry_for(&claim, &from_nad).unwrap().name, "net-ns/macnet");
        let on_network = PreparedNic {
            pod_network: Some("blue-net".into()),
            ..from_nad
        };
        assert_eq!(entry_for(&claim, &on_network).unwrap().name, "blue-net");
    }
}
