//! ResourceClaim status: `status.devices[]`, derived from the claim's checkpoint record and
//! written by server-side apply.
//!
//! [`claim_status`] is a pure function of a [`PreparedClaim`]: what the API should show of
//! it. [`ClaimStatusApply`] writes it; a [`crate::level_writer::LevelWriter`] keeps writing
//! the latest one until it is there ([`crate::reports`] feeds it from the checkpoint).
//!
//! # Guarantees
//! - Each apply carries every netclaim device entry the claim should have (field manager
//!   `netclaim.dev`, forced), so entries netclaim stops reporting are removed by the API
//!   server's field ownership: a device given back to the host loses its entry.
//! - An attached device gets `Ready=True` (reason `NetworkReady`, or `AttachedLate` when
//!   it was attached after its pod had started) with `networkData`; a device whose last
//!   attach failed gets `Ready=False` with the failure's reason and message. The
//!   condition's `lastTransitionTime` is the time stored in the record, so it is the same
//!   after a restart.
//! - The entries respect the `resource.k8s.io/v1` limits: `interfaceName` at most 256
//!   characters and `hardwareAddress` at most 128 (longer values are left out, with a
//!   log), at most 16 `ips` in CIDR form, one condition of the at most 8, a message of at
//!   most 32768 bytes; in CNI mode `data` holds the raw ADD result when its JSON is at
//!   most 10 KiB (else it is left out, with a log).

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::level_writer::{Applied, Apply};
use crate::state::{AttachPhase, NetworkData, PreparedClaim, PreparedNic};

/// The field manager of netclaim's status applies.
pub const FIELD_MANAGER: &str = "netclaim.dev";
/// The condition type netclaim sets on each device.
pub const CONDITION_READY: &str = "Ready";
/// Reason of a `Ready=True` condition.
pub const REASON_READY: &str = "NetworkReady";
/// Reason of a `Ready=True` condition for a device attached after its pod had started.
pub const REASON_ATTACHED_LATE: &str = "AttachedLate";

/// `status.devices[].networkData.interfaceName` limit.
pub const MAX_INTERFACE_NAME: usize = 256;
/// `status.devices[].networkData.hardwareAddress` limit.
pub const MAX_HARDWARE_ADDRESS: usize = 128;
/// `status.devices[].networkData.ips` limit.
pub const MAX_IPS: usize = 16;
/// `status.devices[].data` limit, in bytes of JSON.
pub const MAX_DEVICE_DATA: usize = 10 * 1024;
/// `metav1.Condition.message` limit.
const MAX_CONDITION_MESSAGE: usize = 32768;

/// What the API should show of one claim: its namespace and name (where to write) and
/// netclaim's `status.devices[]` entries.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimStatus {
    /// Claim namespace.
    pub namespace: String,
    /// Claim name.
    pub name: String,
    /// netclaim's device entries (empty: remove netclaim's entries).
    pub devices: Vec<Value>,
}

/// The `Ready` condition of one device, when it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// `True` or `False`.
    pub status: &'static str,
    /// The reason.
    pub reason: String,
    /// The message.
    pub message: String,
    /// `lastTransitionTime`.
    pub since: String,
}

/// The `Ready` condition of `nic`: `None` while it is neither attached nor failed.
pub fn condition(nic: &PreparedNic) -> Option<Condition> {
    if let Some(attachment) = &nic.attachment
        && attachment.phase == AttachPhase::Attached
        && let Some(network) = &attachment.network
    {
        let (reason, message) = if network.late {
            (
                REASON_ATTACHED_LATE,
                format!(
                    "interface {} was attached after the pod had started: the container \
                     runtime ran the pod sandbox while netclaim's NRI plugin was not \
                     connected, and netclaim attached it when the runtime reconnected",
                    network.data.interface_name
                ),
            )
        } else {
            (
                REASON_READY,
                format!(
                    "interface {} is configured in the pod",
                    network.data.interface_name
                ),
            )
        };
        return Some(Condition {
            status: "True",
            reason: reason.to_owned(),
            message,
            since: network.since.clone(),
        });
    }
    nic.failure.as_ref().map(|failure| Condition {
        status: "False",
        reason: failure.reason.as_str().to_owned(),
        message: truncate(&failure.message, MAX_CONDITION_MESSAGE),
        since: failure.since.clone(),
    })
}

/// What the API should show of `claim` (see the [module docs](self)).
pub fn claim_status(claim: &PreparedClaim, driver_name: &str) -> ClaimStatus {
    let devices = claim
        .nics
        .iter()
        .filter_map(|nic| condition(nic).map(|c| device_entry(driver_name, nic, &c)))
        .collect();
    ClaimStatus {
        namespace: claim.namespace.clone(),
        name: claim.name.clone(),
        devices,
    }
}

/// One `status.devices[]` entry, within the API's limits.
fn device_entry(driver_name: &str, nic: &PreparedNic, condition: &Condition) -> Value {
    let mut entry = json!({
        "driver": driver_name,
        "pool": nic.pool,
        "device": nic.device,
        "conditions": [{
            "type": CONDITION_READY,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": condition.since,
        }],
    });
    if let Some(share_id) = &nic.share_id {
        entry["shareID"] = json!(share_id);
    }
    let network = nic
        .attachment
        .as_ref()
        .filter(|a| a.phase == AttachPhase::Attached)
        .and_then(|a| a.network.as_ref());
    if let Some(network) = network {
        entry["networkData"] = network_data(&nic.device, &network.data);
        let data = device_data(&nic.device, network.cni_result.as_ref());
        if let Some(data) = with_pod_network(data, nic.pod_network.as_deref()) {
            entry["data"] = data;
        }
    }
    entry
}

/// `data` with the device's PodNetwork (`{"podNetwork": "<name>"}`, the multi-network
/// API's contract) added: next to the CNI result's own keys in CNI mode, so both read as
/// before (a CNI result has no `podNetwork` key).
fn with_pod_network(data: Option<Value>, pod_network: Option<&str>) -> Option<Value> {
    let Some(name) = pod_network else {
        return data;
    };
    let mut data = match data {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    data.insert(
        netclaim_api::podnetwork::DEVICE_DATA_KEY.to_owned(),
        json!(name),
    );
    Some(Value::Object(data))
}

/// `data`: the raw CNI result, left out (with a log) when over the API's limit rather than
/// failing the whole apply.
fn device_data(device: &str, cni_result: Option<&Value>) -> Option<Value> {
    let raw = cni_result?;
    let size = raw.to_string().len();
    if size > MAX_DEVICE_DATA {
        tracing::warn!(
            device,
            size,
            "CNI result larger than {MAX_DEVICE_DATA} bytes; not reported in status.devices[].data"
        );
        return None;
    }
    Some(raw.clone())
}

/// `networkData`: over-long values are left out rather than failing the whole apply.
fn network_data(device: &str, network: &NetworkData) -> Value {
    let mut data = serde_json::Map::new();
    if network.interface_name.len() <= MAX_INTERFACE_NAME {
        data.insert("interfaceName".into(), json!(network.interface_name));
    } else {
        tracing::warn!(
            device,
            "interface name longer than {MAX_INTERFACE_NAME}; not reported"
        );
    }
    if network.ips.len() > MAX_IPS {
        tracing::warn!(
            device,
            count = network.ips.len(),
            "more than {MAX_IPS} addresses; reporting the first {MAX_IPS}"
        );
    }
    let ips: Vec<String> = network
        .ips
        .iter()
        .take(MAX_IPS)
        .map(ToString::to_string)
        .collect();
    if !ips.is_empty() {
        data.insert("ips".into(), json!(ips));
    }
    match &network.hardware_address {
        Some(mac) if mac.len() <= MAX_HARDWARE_ADDRESS => {
            data.insert("hardwareAddress".into(), json!(mac));
        }
        Some(_) => tracing::warn!(
            device,
            "hardware address longer than {MAX_HARDWARE_ADDRESS}; not reported"
        ),
        None => {}
    }
    Value::Object(data)
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Writes a [`ClaimStatus`] by server-side apply.
pub struct ClaimStatusApply {
    client: kube::Client,
}

impl ClaimStatusApply {
    /// Applies with `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl Apply<String, ClaimStatus> for ClaimStatusApply {
    fn name(&self) -> &'static str {
        "claim-status"
    }

    async fn apply(&self, uid: &String, desired: &ClaimStatus) -> Applied {
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), &desired.namespace);
        let body = json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": { "name": desired.name, "namespace": desired.namespace, "uid": uid },
            "status": { "devices": desired.devices },
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&desired.name, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => Applied::Done,
            Err(error) => classify(&error, &format!("{}/{}", desired.namespace, desired.name)),
        }
    }
}

/// How a failed write of `what` goes on: 404 (or a UID precondition failure: the object
/// was recreated) means gone, 409/429/5xx/transport mean retry; anything else is logged
/// and retried too (slowly, by the writer's backoff): a rejection may be a transient
/// admission problem, and giving up would leave the API wrong for good.
pub(crate) fn classify(error: &kube::Error, what: &str) -> Applied {
    match error {
        kube::Error::Api(status) if status.code == 404 => Applied::Gone,
        kube::Error::Api(status)
            if status.code == 409 && status.message.contains("Precondition failed: UID") =>
        {
            Applied::Gone
        }
        kube::Error::Api(status) if matches!(status.code, 409 | 429 | 500..=599) => {
            Applied::Retry(error.to_string())
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => Applied::Retry(error.to_string()),
        other => {
            tracing::warn!(object = what, error = %other, "the API refused a write; retrying later");
            Applied::Retry(other.to_string())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::{AttachedNetwork, Attachment, FailureReason, LinkSnapshot, NicFailure};

    fn nic() -> PreparedNic {
        serde_json::from_value(json!({
            "request": "nic", "pool": "node-a", "device": "eth1", "shareId": "0a1b",
            "hostIfName": "eth1", "config": {}
        }))
        .unwrap()
    }

    fn attached(ips: usize) -> PreparedNic {
        let mut nic = nic();
        nic.attachment = Some(Attachment {
            sandbox_id: "s".into(),
            netns_path: "/run/netns/p".into(),
            host: LinkSnapshot::default(),
            pod_if_name: "net1".into(),
            phase: AttachPhase::Attached,
            pod: None,
            network: Some(AttachedNetwork {
                data: NetworkData {
                    interface_name: "net1".into(),
                    ips: (0..ips)
                        .map(|i| format!("192.0.2.{}/24", i + 1).parse().unwrap())
                        .collect(),
                    hardware_address: Some("02:00:00:00:00:01".into()),
                },
                cni_result: None,
                since: "2026-01-01T00:00:00Z".into(),
                late: false,
            }),
            error: None,
        });
        nic
    }

    fn claim(nics: Vec<PreparedNic>) -> PreparedClaim {
        PreparedClaim {
            uid: "uid-1".into(),
            namespace: "default".into(),
            name: "nic-a".into(),
            pods: Vec::new(),
            pod_claim_name: None,
            nics,
        }
    }

    #[test]
    fn an_attached_device_is_ready_with_network_data() {
        let status = claim_status(&claim(vec![attached(2)]), "netclaim.dev");
        let entry = &status.devices[0];
        assert_eq!(entry["driver"], "netclaim.dev");
        assert_eq!(entry["shareID"], "0a1b");
        assert_eq!(entry["networkData"]["interfaceName"], "net1");
        assert_eq!(entry["networkData"]["ips"][1], "192.0.2.2/24");
        assert_eq!(entry["conditions"][0]["reason"], "NetworkReady");
        assert_eq!(
            entry["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn the_driver_name_is_the_configured_one() {
        let status = claim_status(&claim(vec![attached(1)]), "net.example.com");
        assert_eq!(status.devices[0]["driver"], "net.example.com");
    }

    #[test]
    fn a_late_attach_says_so() {
        let mut nic = attached(1);
        if let Some(network) = nic.attachment.as_mut().and_then(|a| a.network.as_mut()) {
            network.late = true;
        }
        let status = claim_status(&claim(vec![nic]), "netclaim.dev");
        let condition = &status.devices[0]["conditions"][0];
        assert_eq!(condition["status"], "True");
        assert_eq!(condition["reason"], "AttachedLate");
        assert!(
            condition["message"]
                .as_str()
                .unwrap()
                .contains("NRI plugin was not connected"),
            "{condition}"
        );
    }

    #[test]
    fn limits_are_respected() {
        let mut nic = attached(20);
        if let Some(network) = nic.attachment.as_mut().and_then(|a| a.network.as_mut()) {
            network.data.interface_name = "x".repeat(MAX_INTERFACE_NAME + 1);
            network.data.hardware_address = Some("a".repeat(MAX_HARDWARE_ADDRESS + 1));
            network.cni_result = Some(json!({"pad": "x".repeat(MAX_DEVICE_DATA)}));
        }
        let status = claim_status(&claim(vec![nic]), "netclaim.dev");
        let entry = &status.devices[0];
        assert_eq!(
            entry["networkData"]["ips"].as_array().unwrap().len(),
            MAX_IPS
        );
        assert!(entry["networkData"].get("interfaceName").is_none());
        assert!(entry["networkData"].get("hardwareAddress").is_none());
        assert!(entry.get("data").is_none());
    }

    #[test]
    fn the_cni_result_goes_in_data() {
        let result = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1"}]});
        let mut nic = attached(1);
        if let Some(network) = nic.attachment.as_mut().and_then(|a| a.network.as_mut()) {
            network.cni_result = Some(result.clone());
        }
        let status = claim_status(&claim(vec![nic]), "netclaim.dev");
        assert_eq!(status.devices[0]["data"], result);
    }

    #[test]
    fn the_pod_network_goes_in_data_next_to_the_cni_result() {
        let result = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1"}]});
        let mut nic = attached(1);
        nic.pod_network = Some("blue-net".into());
        let status = claim_status(&claim(vec![nic.clone()]), "netclaim.dev");
        assert_eq!(status.devices[0]["data"], json!({"podNetwork": "blue-net"}));
        if let Some(network) = nic.attachment.as_mut().and_then(|a| a.network.as_mut()) {
            network.cni_result = Some(result.clone());
        }
        let status = claim_status(&claim(vec![nic]), "netclaim.dev");
        let data = &status.devices[0]["data"];
        assert_eq!(data["podNetwork"], "blue-net");
        assert_eq!(data["cniVersion"], result["cniVersion"]);
        assert_eq!(data["interfaces"], result["interfaces"]);
    }

    #[test]
    fn a_failure_is_not_ready_and_idle_or_moving_devices_have_no_entry() {
        let mut failed = nic();
        failed.failure = Some(NicFailure {
            reason: FailureReason::AttachFailed,
            message: "interface.routes[0]: gateway unreachable".into(),
            since: "2026-01-02T00:00:00Z".into(),
        });
        let mut moving = attached(1);
        moving.device = "eth2".into();
        if let Some(a) = moving.attachment.as_mut() {
            a.phase = AttachPhase::Detaching;
        }
        let mut idle = nic();
        idle.device = "eth3".into();
        let status = claim_status(&claim(vec![failed, moving, idle]), "netclaim.dev");
        assert_eq!(status.devices.len(), 1);
        let entry = &status.devices[0];
        assert_eq!(entry["conditions"][0]["status"], "False");
        assert_eq!(entry["conditions"][0]["reason"], "AttachFailed");
        assert_eq!(
            entry["conditions"][0]["message"],
            "interface.routes[0]: gateway unreachable"
        );
        assert!(entry.get("networkData").is_none());
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
