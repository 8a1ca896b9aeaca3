//! The pod's `k8s.v1.cni.cncf.io/network-status` annotation (multi-network spec v1.2),
//! kept up to date in the background for the interfaces netclaim puts into pods.
//!
//! [`NetworkStatusWriter::publish`] and [`NetworkStatusWriter::withdraw`] only enqueue, so
//! an NRI hook never waits on the API server. A background task writes one pod at a time:
//! it GETs the pod, computes the new annotation value with
//! [`update_network_status`](crate::cni::update_network_status) and sends a JSON merge
//! patch carrying the `metadata.resourceVersion` it read. Changes for the same pod coalesce
//! per interface (the latest change of an interface wins, including over one being
//! retried).
//!
//! Which network an entry names:
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
//! - Only the pod with the UID the change was made for is written: a pod recreated under
//!   the same name gets nothing from its predecessor.
//! - When no entry is left, the annotation is removed rather than left as `[]`.
//!
//! # Errors
//! A missing pod (404) drops its changes silently (it is gone, or never existed as an API
//! object). 409, 429, 5xx and transport errors are retried with backoff; anything else,
//! and an annotation that is not a JSON list of objects (left for its owner to fix), is
//! logged and the change dropped (a later change for the pod starts afresh).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::attach::AttachOutcome;
use crate::cni::{self, NETWORK_STATUS_ANNOTATION, NetworkStatusEntry, PodRef};
use crate::state::{PreparedClaim, PreparedNic};
use crate::status::{Backoff, is_not_found, retryable};
use crate::work_queue::WorkQueue;

/// The network name of a static-mode interface: `<claim namespace>/<claim name>`.
pub fn static_network_name(claim: &PreparedClaim) -> String {
    format!("{}/{}", claim.namespace, claim.name)
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

/// The entry for one attached NIC of `claim`: [`cni_entry`] when a CNI network attached it
/// (`cni_result` is its ADD result), else [`static_entry`].
pub fn entry_for(
    claim: &PreparedClaim,
    nic: &PreparedNic,
    outcome: &AttachOutcome,
    cni_result: Option<&Value>,
) -> NetworkStatusEntry {
    match cni_result {
        Some(result) => cni_entry(nic, &outcome.pod_if_name, result),
        None => static_entry(claim, nic, outcome),
    }
}

/// The entry for a NIC netclaim moved into the pod and configured itself (static mode):
/// the interface name, addresses and MAC the attach reported, and `device-info` with the
/// NIC's PCI address when it is a PCI function.
pub fn static_entry(
    claim: &PreparedClaim,
    nic: &PreparedNic,
    outcome: &AttachOutcome,
) -> NetworkStatusEntry {
    let ips: Vec<ipnet::IpNet> = outcome
        .ips
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    NetworkStatusEntry::from_static(
        &static_network_name(claim),
        &outcome.pod_if_name,
        &ips,
        outcome.mac.as_deref(),
        nic.pci_address.as_deref(),
    )
}

/// The entry for an interface a CNI network attached, from the ADD result as the plugins
/// returned it. `device-info` carries the PCI address when the result's pod-side
/// interface has one (spec 1.1 `pciID`). A result that does not parse (ADD already
/// checked it, so only a corrupt cache could give one) gives an entry without addresses.
pub fn cni_entry(nic: &PreparedNic, pod_if_name: &str, raw_result: &Value) -> NetworkStatusEntry {
    let result = cni::typed_result(raw_result).unwrap_or_default();
    let pci_address = result
        .interfaces
        .iter()
        .find(|interface| interface.name == pod_if_name && interface.sandbox.is_some())
        .and_then(|interface| interface.pci_id.clone());
    NetworkStatusEntry::from_cni_result(
        &cni_network_name(nic),
        pod_if_name,
        &result,
        pci_address.as_deref(),
    )
}

/// What is to change in one pod's annotation: per interface, its new entry, or `None` to
/// remove it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodChanges {
    /// The pod.
    pub pod: PodRef,
    /// By interface name: the entry to write, or `None` to drop the interface's entry.
    pub interfaces: BTreeMap<String, Option<NetworkStatusEntry>>,
}

impl PodChanges {
    /// Lays `newer` over these changes: its interfaces win.
    fn absorb(&mut self, newer: PodChanges) {
        self.pod = newer.pod;
        self.interfaces.extend(newer.interfaces);
    }
}

/// Why a pod's annotation is left as it is.
#[derive(Debug, thiserror::Error)]
pub enum Skip {
    /// The pod of that name has another UID: the one the change was for is gone.
    #[error("the pod was recreated (UID {found}, the change was for {expected})")]
    Recreated {
        /// The UID the change was made for.
        expected: String,
        /// The UID of the pod found.
        found: String,
    },
    /// The annotation is not what the multi-network spec defines.
    #[error(transparent)]
    Annotation(#[from] cni::CniError),
}

/// The merge patch that applies `changes` to `pod`'s annotation, with the pod's
/// `resourceVersion` as precondition; `None` when the annotation already says that.
///
/// # Errors
/// [`Skip`] when the pod is not the one of `changes` or its annotation is malformed.
pub fn annotation_patch(pod: &Pod, changes: &PodChanges) -> Result<Option<Value>, Skip> {
    let found = pod.metadata.uid.clone().unwrap_or_default();
    if found != changes.pod.uid {
        return Err(Skip::Recreated {
            expected: changes.pod.uid.clone(),
            found,
        });
    }
    let existing = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(NETWORK_STATUS_ANNOTATION));
    let ours: Vec<NetworkStatusEntry> = changes.interfaces.values().flatten().cloned().collect();
    let removed: Vec<&str> = changes
        .interfaces
        .iter()
        .filter(|(_, entry)| entry.is_none())
        .map(|(interface, _)| interface.as_str())
        .collect();
    let updated = cni::update_network_status(existing.map(String::as_str), &ours, &removed)?;
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

/// Writes pods' network-status annotations in the background (see the
/// [module docs](self)).
pub struct NetworkStatusWriter {
    queue: Arc<WorkQueue<PodChanges>>,
    task: JoinHandle<()>,
}

impl NetworkStatusWriter {
    /// Starts the background task on the current tokio runtime.
    pub fn start(client: kube::Client, backoff: Backoff) -> Self {
        let queue = Arc::new(WorkQueue::new());
        let worker = Worker {
            client,
            backoff,
            queue: queue.clone(),
        };
        let task = tokio::spawn(worker.run());
        Self { queue, task }
    }

    /// Sets `entries` (each replacing the entry of its interface) in `pod`'s annotation.
    /// Never blocks on I/O.
    pub fn publish(&self, pod: &PodRef, entries: Vec<NetworkStatusEntry>) {
        if entries.is_empty() {
            return;
        }
        let interfaces = entries
            .into_iter()
            .map(|entry| (entry.interface.clone().unwrap_or_default(), Some(entry)))
            .collect();
        self.enqueue(PodChanges {
            pod: pod.clone(),
            interfaces,
        });
    }

    /// Removes the entries of `interfaces` from `pod`'s annotation. Never blocks on I/O.
    pub fn withdraw(&self, pod: &PodRef, interfaces: &[&str]) {
        if interfaces.is_empty() {
            return;
        }
        let interfaces = interfaces
            .iter()
            .map(|interface| ((*interface).to_owned(), None))
            .collect();
        self.enqueue(PodChanges {
            pod: pod.clone(),
            interfaces,
        });
    }

    fn enqueue(&self, changes: PodChanges) {
        self.queue
            .push(changes.pod.uid.clone(), changes, PodChanges::absorb);
    }

    /// Waits until every change enqueued so far was written or given up on.
    pub async fn flush(&self) {
        self.queue.flush().await;
    }
}

impl Drop for NetworkStatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one write attempt ended.
enum Attempt {
    /// The annotation says what the changes asked (written now, or already).
    Done,
    /// The pod is not to be written (see [`Skip`]).
    Skipped(Skip),
    /// The API server refused or could not be reached.
    Failed(kube::Error),
}

struct Worker {
    client: kube::Client,
    backoff: Backoff,
    queue: Arc<WorkQueue<PodChanges>>,
}

impl Worker {
    async fn run(self) {
        loop {
            let changes = self.queue.next().await;
            self.process(changes).await;
            self.queue.finished();
        }
    }

    /// Writes one pod's changes (with newer ones laid over them as they arrive).
    async fn process(&self, mut changes: PodChanges) {
        let pod = format!("{}/{}", changes.pod.namespace, changes.pod.name);
        let mut delay = self.backoff.initial;
        for attempt in 1..=self.backoff.attempts.max(1) {
            match self.write(&changes).await {
                Attempt::Done => return,
                Attempt::Skipped(Skip::Recreated { .. }) => {
                    // Not a warning: the pod the interfaces were in is gone, so is its entry.
                    tracing::debug!(%pod, "pod recreated; dropping its network status");
                    return;
                }
                Attempt::Skipped(why) => {
                    tracing::warn!(%pod, "not writing {NETWORK_STATUS_ANNOTATION}: {why}");
                    return;
                }
                Attempt::Failed(error) if is_not_found(&error) => {
                    tracing::debug!(%pod, "pod not found; dropping its network status");
                    return;
                }
                Attempt::Failed(error) if retryable(&error) && attempt < self.backoff.attempts => {
                    tracing::debug!(%pod, %error, attempt, "network status write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff.max);
                    if let Some(newer) = self.queue.take_newer(&changes.pod.uid) {
                        changes.absorb(newer);
                    }
                }
                Attempt::Failed(error) => {
                    tracing::warn!(%pod, %error, "giving up writing {NETWORK_STATUS_ANNOTATION}");
                    return;
                }
            }
        }
    }

    /// Reads the pod and patches its annotation, conditional on the version read.
    async fn write(&self, changes: &PodChanges) -> Attempt {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &changes.pod.namespace);
        let pod = match api.get(&changes.pod.name).await {
            Ok(pod) => pod,
            Err(error) => return Attempt::Failed(error),
        };
        let patch = match annotation_patch(&pod, changes) {
            Ok(Some(patch)) => patch,
            Ok(None) => return Attempt::Done,
            Err(skip) => return Attempt::Skipped(skip),
        };
        match api
            .patch(
                &changes.pod.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Attempt::Done,
            Err(error) => Attempt::Failed(error),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    fn set(entries: &[NetworkStatusEntry]) -> PodChanges {
        PodChanges {
            pod: pod_ref(),
            interfaces: entries
                .iter()
                .map(|e| (e.interface.clone().unwrap(), Some(e.clone())))
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
    fn the_patch_keeps_foreign_entries_and_carries_the_resource_version() {
        let changes = set(&[entry("net1", "192.0.2.10/24")]);
        let patch = annotation_patch(&pod("uid-1", Some(PRIMARY)), &changes)
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
        let changes = set(&[entry("net1", "192.0.2.10/24")]);
        let patch = annotation_patch(&pod("uid-1", Some(PRIMARY)), &changes)
            .unwrap()
            .unwrap();
        let written = patch["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION]
            .as_str()
            .unwrap();
        assert!(
            annotation_patch(&pod("uid-1", Some(written)), &changes)
                .unwrap()
                .is_none()
        );
        // Removing what is not there, from a pod without the annotation: nothing to do.
        let mut remove = PodChanges {
            pod: pod_ref(),
            ..PodChanges::default()
        };
        remove.interfaces.insert("net1".into(), None);
        assert!(
            annotation_patch(&pod("uid-1", None), &remove)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn removal_keeps_others_and_deletes_an_annotation_left_empty() {
        let mut remove = PodChanges {
            pod: pod_ref(),
            ..PodChanges::default()
        };
        remove.interfaces.insert("net1".into(), None);
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
        let changes = set(&[entry("net1", "192.0.2.10/24")]);
        assert!(matches!(
            annotation_patch(&pod("uid-2", None), &changes),
            Err(Skip::Recreated { .. })
        ));
        assert!(matches!(
            annotation_patch(&pod("uid-1", Some(r#"{"not":"a list"}"#)), &changes),
            Err(Skip::Annotation(_))
        ));
    }

    #[test]
    fn later_changes_of_an_interface_win() {
        let mut pending = set(&[
            entry("net1", "192.0.2.10/24"),
            entry("net2", "192.0.2.11/24"),
        ]);
        let mut newer = set(&[entry("net1", "192.0.2.20/24")]);
        newer.interfaces.insert("net2".into(), None);
        pending.absorb(newer);
        assert_eq!(
            pending.interfaces["net1"].as_ref().unwrap().ips,
            ["192.0.2.20"]
        );
        assert!(pending.interfaces["net2"].is_none());
        let patch = annotation_patch(&pod("uid-1", Some(PRIMARY)), &pending)
            .unwrap()
            .unwrap();
        let entries = annotation_of(&patch);
        assert_eq!(entries.as_array().unwrap().len(), 2, "{entries}");
        assert_eq!(entries[1]["ips"], json!(["192.0.2.20"]));
    }

    #[test]
    fn cni_entries_name_the_network_and_take_the_result() {
        let nic: PreparedNic = serde_json::from_value(json!({
            "request": "nic", "pool": "node-a", "device": "eth1", "hostIfName": "eth1",
            "config": {},
            "cni": {"cniVersion": "1.0.0", "name": "macnet", "plugins": [{"type": "macvlan"}]}
        }))
        .unwrap();
        let raw = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:09", "sandbox": "/run/netns/p",
                            "pciID": "0000:03:00.1"}],
            "ips": [{"address": "192.0.2.50/24", "interface": 0}],
            "dns": {"nameservers": ["192.0.2.53"]}
        });
        let entry = cni_entry(&nic, "net1", &raw);
        assert_eq!(entry.name, "macnet");
        let from_nad = PreparedNic {
            network_attachment_definition: Some("net-ns/macnet".into()),
            ..nic.clone()
        };
        assert_eq!(cni_entry(&from_nad, "net1", &raw).name, "net-ns/macnet");
        assert_eq!(entry.ips, ["192.0.2.50"]);
        assert_eq!(entry.mac.as_deref(), Some("02:00:00:00:00:09"));
        let value = serde_json::to_value(&entry).unwrap();
        assert_eq!(value["device-info"]["pci"]["pci-address"], "0000:03:00.1");
        assert_eq!(value["dns"]["nameservers"], json!(["192.0.2.53"]));
    }

    #[test]
    fn static_entries_name_the_claim_and_carry_the_pci_address() {
        let claim: PreparedClaim = serde_json::from_value(json!({
            "uid": "uid-1", "namespace": "team-a", "name": "fast-nic", "podUids": ["pod-1"],
            "nics": []
        }))
        .unwrap();
        let nic: PreparedNic = serde_json::from_value(json!({
            "request": "nic", "pool": "node-a", "device": "ens1f0", "hostIfName": "ens1f0",
            "pciAddress": "0000:03:00.0", "config": {}
        }))
        .unwrap();
        let outcome = AttachOutcome {
            host: crate::state::LinkSnapshot::default(),
            pod_if_name: "net1".into(),
            ips: vec!["192.0.2.10/24".into(), "2001:db8::10/64".into()],
            mac: Some("02:00:00:00:00:0a".into()),
            reapplied: false,
        };
        let entry = static_entry(&claim, &nic, &outcome);
        assert_eq!(entry.name, "team-a/fast-nic");
        assert_eq!(entry.interface.as_deref(), Some("net1"));
        assert_eq!(entry.ips, ["192.0.2.10", "2001:db8::10"]);
        let value = serde_json::to_value(&entry).unwrap();
        assert_eq!(value["device-info"]["pci"]["pci-address"], "0000:03:00.0");
        let without_pci = PreparedNic {
            pci_address: None,
            ..nic
        };
        let value = serde_json::to_value(static_entry(&claim, &without_pci, &outcome)).unwrap();
        assert!(value.get("device-info").is_none(), "{value}");
    }
}
