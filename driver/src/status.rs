//! ResourceClaim status reporting: `status.devices[]` by server-side apply, and Events.
//!
//! [`ClaimStatusWriter::report`] only enqueues, so an NRI hook never waits on the API
//! server. A background task applies the reports, one claim at a time, with retry and
//! backoff on conflicts (409), throttling (429), server errors (5xx) and transport errors.
//! Reports for the same claim coalesce: the latest one wins, including over one that is
//! being retried.
//!
//! # Guarantees
//! - Each apply carries every netclaim device of the claim (field manager `netclaim.dev`,
//!   forced), so devices netclaim stops reporting are removed by the API server's field
//!   ownership. An empty report removes all of them.
//! - The entries respect the `resource.k8s.io/v1` limits: `interfaceName` at most 256
//!   characters and `hardwareAddress` at most 128 (longer values are left out, with a
//!   log), at most 16 `ips` in CIDR form, one condition (`Ready`) of the at most 8; in CNI
//!   mode `data` holds the raw ADD result when its JSON is at most 10 KiB (else it is left
//!   out, with a log).
//! - `lastTransitionTime` changes only when the `Ready` status changes.
//! - An Event (`v1`, involvedObject = the claim, source component `netclaim`) is emitted
//!   when a device's `Ready` condition changes: `Warning` with the failure reason, `Normal`
//!   `NetworkReady` when it becomes ready.
//!
//! # Errors
//! Apply and Event failures are logged; a report that still fails after the retry budget
//! is dropped (a later report for the claim starts afresh).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::api::resource::v1::ResourceClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use netclaim_api::DRIVER_NAME;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::work_queue::WorkQueue;

/// The field manager of netclaim's status applies.
pub const FIELD_MANAGER: &str = "netclaim.dev";
/// The Event source component.
pub const EVENT_COMPONENT: &str = "netclaim";
/// The condition type netclaim sets on each device.
pub const CONDITION_READY: &str = "Ready";
/// Reason of a `Ready=True` condition.
pub const REASON_READY: &str = "NetworkReady";

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

/// Why a device is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Moving or configuring the NIC in the pod failed.
    AttachFailed,
    /// The claim's configuration cannot be applied.
    ConfigInvalid,
}

impl FailureReason {
    /// The condition and Event reason.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::AttachFailed => "AttachFailed",
            FailureReason::ConfigInvalid => "ConfigInvalid",
        }
    }
}

/// What the pod sees of a device: `status.devices[].networkData`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkData {
    /// The interface name inside the pod.
    pub interface_name: String,
    /// Its addresses, with prefix length.
    pub ips: Vec<IpNet>,
    /// Its MAC address.
    pub hardware_address: Option<String>,
}

/// The state of one device of a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceState {
    /// Configured inside the pod.
    Ready(NetworkData),
    /// Not configured, and why.
    Failed {
        /// The condition reason.
        reason: FailureReason,
        /// What went wrong, for users.
        message: String,
    },
}

/// One device's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReport {
    /// The pool of the allocation result.
    pub pool: String,
    /// The device of the allocation result.
    pub device: String,
    /// The allocation result's share id, if any.
    pub share_id: Option<String>,
    /// Its state.
    pub state: DeviceState,
    /// CNI mode: the ADD result as the plugins returned it, reported as the entry's
    /// `data` when the device is ready and the JSON fits in [`MAX_DEVICE_DATA`] bytes.
    pub cni_result: Option<Value>,
}

/// Everything netclaim reports for one claim: all its netclaim devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimReport {
    /// Claim namespace.
    pub namespace: String,
    /// Claim name.
    pub name: String,
    /// Claim UID (Events name it; reports coalesce by it).
    pub uid: String,
    /// Every netclaim device of the claim; empty removes netclaim's entries.
    pub devices: Vec<DeviceReport>,
}

/// Retry policy of the background task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
    /// Attempts per report before it is dropped.
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            attempts: 12,
        }
    }
}

/// Writes claim status in the background (see the [module docs](self)).
pub struct ClaimStatusWriter {
    queue: Arc<WorkQueue<ClaimReport>>,
    task: JoinHandle<()>,
}

impl ClaimStatusWriter {
    /// Starts the background task on the current tokio runtime.
    pub fn start(client: kube::Client, backoff: Backoff) -> Self {
        let queue = Arc::new(WorkQueue::new());
        let worker = Worker {
            client,
            backoff,
            queue: queue.clone(),
            conditions: Conditions::default(),
        };
        let task = tokio::spawn(worker.run());
        Self { queue, task }
    }

    /// Enqueues `report`, replacing a pending one for the same claim. Never blocks on I/O.
    pub fn report(&self, report: ClaimReport) {
        self.queue
            .push(report.uid.clone(), report, |pending, newer| {
                *pending = newer
            });
    }

    /// Waits until every report enqueued so far was applied or given up on.
    pub async fn flush(&self) {
        self.queue.flush().await;
    }
}

impl Drop for ClaimStatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The condition last applied for a device, to keep `lastTransitionTime` stable.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LastCondition {
    status: &'static str,
    reason: String,
    time: String,
}

/// (claim uid, pool, device, share id).
type DeviceKey = (String, String, String, Option<String>);

/// One device's condition as rendered for an apply.
struct Rendered {
    key: DeviceKey,
    condition: LastCondition,
    message: String,
    /// New, or its status or reason changed: worth an Event.
    changed: bool,
}

struct Worker {
    client: kube::Client,
    backoff: Backoff,
    queue: Arc<WorkQueue<ClaimReport>>,
    conditions: Conditions,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let report = self.queue.next().await;
            self.process(report).await;
            self.queue.finished();
        }
    }

    /// Applies one claim's report (or a newer one that arrives meanwhile), then emits
    /// Events for the conditions that changed.
    async fn process(&mut self, mut report: ClaimReport) {
        let mut delay = self.backoff.initial;
        for attempt in 1..=self.backoff.attempts.max(1) {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let (body, rendered) = self.conditions.render(&report, &now);
            match self.apply(&report, &body).await {
                Ok(()) => {
                    self.conditions.remember(&report, &rendered);
                    self.emit_events(&report, &rendered).await;
                    return;
                }
                Err(error) if retryable(&error) && attempt < self.backoff.attempts => {
                    tracing::debug!(claim = %report.uid, %error, attempt, "claim status apply failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff.max);
                    if let Some(newer) = self.queue.take_newer(&report.uid) {
                        report = newer;
                    }
                }
                Err(error) if is_not_found(&error) => {
                    tracing::debug!(claim = %report.uid, "claim is gone; dropping its status");
                    self.conditions.forget(&report.uid);
                    return;
                }
                Err(error) => {
                    tracing::warn!(
                        claim = %format!("{}/{}", report.namespace, report.name),
                        %error, "giving up writing claim status"
                    );
                    return;
                }
            }
        }
    }

    async fn apply(&self, report: &ClaimReport, body: &Value) -> Result<(), kube::Error> {
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), &report.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&report.name, &params, &Patch::Apply(body))
            .await
            .map(|_| ())
    }

    /// Events for the devices whose condition is new or changed with this apply.
    async fn emit_events(&self, report: &ClaimReport, applied: &[Rendered]) {
        for rendered in applied.iter().filter(|rendered| rendered.changed) {
            let condition = &rendered.condition;
            let kind = if condition.status == "True" {
                "Normal"
            } else {
                "Warning"
            };
            let text = format!(
                "device {} (pool {}): {}",
                rendered.key.2, rendered.key.1, rendered.message
            );
            if let Err(error) = self.emit(report, kind, &condition.reason, &text).await {
                tracing::warn!(claim = %report.uid, %error, "could not emit an Event");
            }
        }
    }

    async fn emit(
        &self,
        report: &ClaimReport,
        kind: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &report.namespace);
        let event = claim_event(report, kind, reason, message);
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}

/// The conditions last applied per device, to keep `lastTransitionTime` stable and to
/// know which changes deserve an Event.
#[derive(Debug, Default)]
struct Conditions {
    last: HashMap<DeviceKey, LastCondition>,
}

impl Conditions {
    /// The apply body and, per device, the condition it sets.
    fn render(&self, report: &ClaimReport, now: &str) -> (Value, Vec<Rendered>) {
        let mut devices = Vec::new();
        let mut rendered = Vec::new();
        for device in &report.devices {
            let key = (
                report.uid.clone(),
                device.pool.clone(),
                device.device.clone(),
                device.share_id.clone(),
            );
            let (status, reason, message) = condition_of(&device.state);
            let last = self.last.get(&key);
            let time = match last {
                Some(last) if last.status == status => last.time.clone(),
                _ => now.to_owned(),
            };
            let changed = last.is_none_or(|last| last.status != status || last.reason != reason);
            devices.push(device_entry(device, status, &reason, &message, &time));
            rendered.push(Rendered {
                key,
                condition: LastCondition {
                    status,
                    reason,
                    time,
                },
                message,
                changed,
            });
        }
        let body = json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": { "name": report.name, "namespace": report.namespace },
            "status": { "devices": devices },
        });
        (body, rendered)
    }

    /// Keeps the applied conditions as the base of the next transition times.
    fn remember(&mut self, report: &ClaimReport, applied: &[Rendered]) {
        self.forget(&report.uid);
        for rendered in applied {
            self.last
                .insert(rendered.key.clone(), rendered.condition.clone());
        }
    }

    fn forget(&mut self, uid: &str) {
        self.last.retain(|key, _| key.0 != uid);
    }
}

/// `(status, reason, message)` of the `Ready` condition for `state`.
fn condition_of(state: &DeviceState) -> (&'static str, String, String) {
    match state {
        DeviceState::Ready(network) => (
            "True",
            REASON_READY.to_owned(),
            format!(
                "interface {} is configured in the pod",
                network.interface_name
            ),
        ),
        DeviceState::Failed { reason, message } => (
            "False",
            reason.as_str().to_owned(),
            truncate(message, MAX_CONDITION_MESSAGE),
        ),
    }
}

/// One `status.devices[]` entry, within the API's limits.
fn device_entry(
    device: &DeviceReport,
    status: &str,
    reason: &str,
    message: &str,
    time: &str,
) -> Value {
    let mut entry = json!({
        "driver": DRIVER_NAME,
        "pool": device.pool,
        "device": device.device,
        "conditions": [{
            "type": CONDITION_READY,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": time,
        }],
    });
    if let Some(share_id) = &device.share_id {
        entry["shareID"] = json!(share_id);
    }
    if let DeviceState::Ready(network) = &device.state {
        entry["networkData"] = network_data(&device.device, network);
        if let Some(data) = device_data(device) {
            entry["data"] = data;
        }
    }
    entry
}

/// `data`: the raw CNI result, left out (with a log) when over the API's limit rather than
/// failing the whole apply.
fn device_data(device: &DeviceReport) -> Option<Value> {
    let raw = device.cni_result.as_ref()?;
    let size = raw.to_string().len();
    if size > MAX_DEVICE_DATA {
        tracing::warn!(
            device = %device.device,
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

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A core `v1` Event about the claim.
fn claim_event(report: &ClaimReport, kind: &str, reason: &str, message: &str) -> Event {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", report.name)),
            namespace: Some(report.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("resource.k8s.io/v1".into()),
            kind: Some("ResourceClaim".into()),
            name: Some(report.name.clone()),
            namespace: Some(report.namespace.clone()),
            uid: Some(report.uid.clone()),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(truncate(message, 1024)),
        type_: Some(kind.to_owned()),
        source: Some(EventSource {
            component: Some(EVENT_COMPONENT.to_owned()),
            host: None,
        }),
        reporting_component: Some(EVENT_COMPONENT.to_owned()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    }
}

/// 409, 429, 5xx and transport failures are worth another try.
pub(crate) fn retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 409 | 429 | 500..=599),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// 404 Not Found.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ready(ips: usize) -> DeviceReport {
        DeviceReport {
            pool: "node-a".into(),
            device: "eth1".into(),
            share_id: Some("0a1b".into()),
            state: DeviceState::Ready(NetworkData {
                interface_name: "net1".into(),
                ips: (0..ips)
                    .map(|i| format!("192.0.2.{}/24", i + 1).parse().unwrap())
                    .collect(),
                hardware_address: Some("02:00:00:00:00:01".into()),
            }),
            cni_result: None,
        }
    }

    #[test]
    fn ready_entry_carries_network_data_and_condition() {
        let device = ready(2);
        let entry = device_entry(&device, "True", REASON_READY, "ok", "2026-01-01T00:00:00Z");
        assert_eq!(entry["driver"], DRIVER_NAME);
        assert_eq!(entry["shareID"], "0a1b");
        assert_eq!(entry["networkData"]["interfaceName"], "net1");
        assert_eq!(entry["networkData"]["ips"][1], "192.0.2.2/24");
        assert_eq!(entry["conditions"][0]["reason"], "NetworkReady");
    }

    #[test]
    fn limits_are_respected() {
        let mut device = ready(20);
        if let DeviceState::Ready(network) = &mut device.state {
            network.interface_name = "x".repeat(MAX_INTERFACE_NAME + 1);
            network.hardware_address = Some("a".repeat(MAX_HARDWARE_ADDRESS + 1));
        }
        let entry = device_entry(&device, "True", REASON_READY, "ok", "2026-01-01T00:00:00Z");
        assert_eq!(
            entry["networkData"]["ips"].as_array().unwrap().len(),
            MAX_IPS
        );
        assert!(entry["networkData"].get("interfaceName").is_none());
        assert!(entry["networkData"].get("hardwareAddress").is_none());
    }

    #[test]
    fn cni_result_goes_in_data_within_the_limit() {
        let result = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1"}]});
        let device = DeviceReport {
            cni_result: Some(result.clone()),
            ..ready(1)
        };
        let entry = device_entry(&device, "True", REASON_READY, "ok", "2026-01-01T00:00:00Z");
        assert_eq!(entry["data"], result);
        let huge = DeviceReport {
            cni_result: Some(json!({"pad": "x".repeat(MAX_DEVICE_DATA)})),
            ..ready(1)
        };
        let entry = device_entry(&huge, "True", REASON_READY, "ok", "2026-01-01T00:00:00Z");
        assert!(entry.get("data").is_none());
        assert_eq!(entry["networkData"]["interfaceName"], "net1");
    }

    #[test]
    fn failure_has_reason_and_no_network_data() {
        let device = DeviceReport {
            state: DeviceState::Failed {
                reason: FailureReason::AttachFailed,
                message: "netns gone".into(),
            },
            ..ready(0)
        };
        let (status, reason, message) = condition_of(&device.state);
        assert_eq!(
            (status, reason.as_str(), message.as_str()),
            ("False", "AttachFailed", "netns gone")
        );
        let entry = device_entry(&device, status, &reason, &message, "2026-01-01T00:00:00Z");
        assert!(entry.get("networkData").is_none());
    }

    fn report_with(state: DeviceState) -> ClaimReport {
        ClaimReport {
            namespace: "default".into(),
            name: "nic-a".into(),
            uid: "uid-1".into(),
            devices: vec![DeviceReport { state, ..ready(1) }],
        }
    }

    fn failed(message: &str) -> DeviceState {
        DeviceState::Failed {
            reason: FailureReason::AttachFailed,
            message: message.into(),
        }
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let mut conditions = Conditions::default();
        let t = |n: u32| format!("2026-01-01T00:00:0{n}Z");
        let time_of = |body: &Value| {
            body["status"]["devices"][0]["conditions"][0]["lastTransitionTime"].clone()
        };

        let first = report_with(failed("netns gone"));
        let (body, rendered) = conditions.render(&first, &t(1));
        assert_eq!(time_of(&body), t(1));
        assert!(rendered[0].changed, "a new condition is worth an Event");
        conditions.remember(&first, &rendered);

        // Same status, other message: time kept, no Event.
        let (body, rendered) = conditions.render(&report_with(failed("still gone")), &t(2));
        assert_eq!(time_of(&body), t(1));
        assert!(!rendered[0].changed);
        conditions.remember(&first, &rendered);

        // Ready: a transition.
        let ready_report = report_with(ready(1).state);
        let (body, rendered) = conditions.render(&ready_report, &t(3));
        assert_eq!(time_of(&body), t(3));
        assert_eq!(
            body["status"]["devices"][0]["conditions"][0]["status"],
            "True"
        );
        assert!(rendered[0].changed);

        // Not remembered (the apply failed): the next render still sees the old condition.
        let (body, _) = conditions.render(&ready_report, &t(4));
        assert_eq!(time_of(&body), t(4));

        conditions.forget("uid-1");
        let (_, rendered) = conditions.render(&first, &t(5));
        assert!(rendered[0].changed);
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
