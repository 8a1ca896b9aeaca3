//! What the API shows of the node's claims, kept level-triggered from the checkpoint.
//!
//! One task watches the checkpoint's index ([`crate::checkpoint::Checkpoint::subscribe`]).
//! For every claim whose record changed it sets the claim's desired status
//! ([`crate::status::claim_status`]) and the desired network-status of each of its pods
//! ([`crate::network_status::pod_networks`]) on two
//! [`LevelWriter`]s, which write them until the API has them. At start every claim is set
//! once, so after a restart (or an API outage of any length) the API converges on the node.
//!
//! Events (`events.k8s.io/v1`, through kube's `Recorder`, which folds repeats into a
//! series) say what changed: a device ready in its pod (`NetworkReady`), attached after its
//! pod had started (`AttachedLate`, a warning), an attach that failed (`AttachFailed`,
//! `NotAttached`), a give-back that failed (`DetachFailed`). They come from the changes seen
//! while running, not from the start-up pass: a restart does not repeat them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, ClaimIndex};
use crate::level_writer::{Backoff, LevelWriter};
use crate::network_status::{AnnotationApply, PodNetworks, pod_networks};
use crate::state::{AttachPhase, PodRef, PreparedClaim, PreparedNic};
use crate::status::{ClaimStatus, ClaimStatusApply, claim_status};

/// Most Events waiting to be sent; beyond it the oldest are dropped (they are a courtesy,
/// the claim's status carries the same facts).
const MAX_PENDING_EVENTS: usize = 256;

/// The running reporters.
pub struct Reports {
    claims: Arc<LevelWriter<String, ClaimStatus>>,
    pods: Arc<LevelWriter<String, PodNetworks>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reports {
    /// Starts reporting what `checkpoint` holds, for driver `driver_name` on node `node`.
    pub fn start(
        client: kube::Client,
        checkpoint: Arc<Checkpoint>,
        driver_name: &str,
        node: &str,
        backoff: Backoff,
        shutdown: CancellationToken,
    ) -> Self {
        let claims = LevelWriter::start(ClaimStatusApply::new(client.clone()), backoff);
        let pods = LevelWriter::start(AnnotationApply::new(client.clone()), backoff);
        let events = EventSender::start(client, driver_name, node);
        let feed = Feed {
            claims: claims.clone(),
            pods: pods.clone(),
            events,
            driver_name: driver_name.to_owned(),
        };
        let task = tokio::spawn(feed.run(checkpoint, shutdown));
        Self { claims, pods, task }
    }

    /// How many claim statuses and pod annotations wait to be written.
    pub fn backlog(&self) -> usize {
        self.claims.backlog() + self.pods.backlog()
    }

    /// Waits (at most `limit`) until everything is written; true when it got there.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (claims, pods) = tokio::join!(self.claims.flush(limit), self.pods.flush(limit));
        claims && pods
    }

    /// Stops feeding the writers (they finish what they have until dropped).
    pub fn stop(&self) {
        self.task.abort();
    }
}

struct Feed {
    claims: Arc<LevelWriter<String, ClaimStatus>>,
    pods: Arc<LevelWriter<String, PodNetworks>>,
    events: EventSender,
    driver_name: String,
}

impl Feed {
    async fn run(self, checkpoint: Arc<Checkpoint>, shutdown: CancellationToken) {
        let mut changes = checkpoint.subscribe();
        let mut previous = Arc::new(ClaimIndex::default());
        let mut first = true;
        loop {
            changes.borrow_and_update();
            let current = checkpoint.index();
            self.sync(&previous, &current, first);
            previous = current;
            first = false;
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Sets the desired state of every claim that changed between `old` and `new`, and of
    /// the pods of those claims; sends the Events of the changes (not on the first pass).
    fn sync(&self, old: &ClaimIndex, new: &ClaimIndex, first: bool) {
        let mut pods: BTreeMap<String, PodRef> = BTreeMap::new();
        for claim in new.claims() {
            let before = old.claim(&claim.uid);
            if before.is_some_and(|b| Arc::ptr_eq(b, claim)) {
                continue;
            }
            let status = claim_status(claim, &self.driver_name);
            if before.is_none() && status.devices.is_empty() && !first {
                // Newly prepared: the API has no entry of netclaim's for it yet.
                self.claims.assume_applied(claim.uid.clone(), status);
            } else {
                self.claims.set(claim.uid.clone(), status);
            }
            for pod in claim
                .pods
                .iter()
                .chain(before.into_iter().flat_map(|b| b.pods.iter()))
            {
                pods.insert(pod.uid.clone(), pod.clone());
            }
            if !first {
                self.events.changes(before.map(Arc::as_ref), claim);
            }
        }
        for gone in old.claims().filter(|c| new.claim(&c.uid).is_none()) {
            // Unprepared: the claim is being released; its status entries stay as the last
            // word, and its pods lose netclaim's network-status entries.
            self.claims.forget(&gone.uid);
            for pod in &gone.pods {
                pods.insert(pod.uid.clone(), pod.clone());
            }
        }
        for pod in pods.into_values() {
            let networks = pod_networks(new, &pod);
            if first && networks.entries.is_empty() {
                // At start only pods with entries need a look; the others had theirs
                // removed when their devices were given back.
                continue;
            }
            self.pods
                .set_merging(pod.uid.clone(), networks, PodNetworks::merged_with);
        }
    }
}

/// Sends Events in the background, so no caller waits on the API.
struct EventSender {
    queue: mpsc::Sender<(ObjectReference, Event)>,
}

impl EventSender {
    fn start(client: kube::Client, driver_name: &str, node: &str) -> Self {
        let (queue, mut pending) = mpsc::channel::<(ObjectReference, Event)>(MAX_PENDING_EVENTS);
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: driver_name.to_owned(),
                instance: Some(format!("{driver_name}-{node}")),
            },
        );
        tokio::spawn(async move {
            while let Some((reference, event)) = pending.recv().await {
                for attempt in 1..=3u32 {
                    match recorder.publish(&event, &reference).await {
                        Ok(()) => break,
                        Err(error) if attempt < 3 => {
                            tracing::debug!(%error, attempt, "publishing an Event failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt)))
                                .await;
                        }
                        Err(error) => {
                            tracing::warn!(%error, reason = %event.reason, "could not publish an Event")
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// The Events for what changed between `before` and `after` of one claim.
    fn changes(&self, before: Option<&PreparedClaim>, after: &PreparedClaim) {
        for nic in &after.nics {
            let old = before.and_then(|b| b.nic(&nic.device, nic.share_id.as_deref()));
            if let Some(event) = transition(old, nic) {
                self.send(after, event);
            }
        }
    }

    fn send(&self, claim: &PreparedClaim, event: Event) {
        let reference = ObjectReference {
            api_version: Some("resource.k8s.io/v1".into()),
            kind: Some("ResourceClaim".into()),
            name: Some(claim.name.clone()),
            namespace: Some(claim.namespace.clone()),
            uid: Some(claim.uid.clone()),
            ..ObjectReference::default()
        };
        if self.queue.try_send((reference, event)).is_err() {
            tracing::warn!(claim = %claim.qualified_name(), "too many Events waiting; dropping one");
        }
    }
}

/// The Event for a device's change from `old` to `new`, if it deserves one.
fn transition(old: Option<&PreparedNic>, new: &PreparedNic) -> Option<Event> {
    let phase =
        |nic: Option<&PreparedNic>| nic.and_then(|n| n.attachment.as_ref()).map(|a| a.phase);
    let (was, is) = (phase(old), phase(Some(new)));
    let event = |type_, reason: &str, note: String| Event {
        type_,
        reason: reason.to_owned(),
        note: Some(crate::status::truncate(&note, 1024)),
        action: "Attach".to_owned(),
        secondary: None,
    };
    let device = format!("device {} (pool {})", new.device, new.pool);
    if is == Some(AttachPhase::Attached) && was != Some(AttachPhase::Attached) {
        let network = new.attachment.as_ref().and_then(|a| a.network.as_ref())?;
        let ifname = &network.data.interface_name;
        return Some(if network.late {
            event(
                EventType::Warning,
                crate::status::REASON_ATTACHED_LATE,
                format!(
                    "{device}: {ifname} attached after the pod had started (its RunPodSandbox never reached netclaim)"
                ),
            )
        } else {
            event(
                EventType::Normal,
                crate::status::REASON_READY,
                format!("{device}: {ifname} is configured in the pod"),
            )
        });
    }
    if is == Some(AttachPhase::DetachFailed) && was != Some(AttachPhase::DetachFailed) {
        let error = new
            .attachment
            .as_ref()
            .and_then(|a| a.error.clone())
            .unwrap_or_default();
        return Some(Event {
            action: "Detach".to_owned(),
            ..event(
                EventType::Warning,
                "DetachFailed",
                format!("{device}: giving it back to the host failed (netclaim retries): {error}"),
            )
        });
    }
    let failure_changed =
        new.failure.is_some() && old.and_then(|o| o.failure.as_ref()) != new.failure.as_ref();
    if failure_changed && let Some(failure) = &new.failure {
        return Some(event(
            EventType::Warning,
            failure.reason.as_str(),
            format!("{device}: {}", failure.message),
        ));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::{
        AttachedNetwork, Attachment, FailureReason, LinkSnapshot, NetworkData, NicFailure,
    };

    fn nic() -> PreparedNic {
        serde_json::from_value(serde_json::json!({
            "request": "nic", "pool": "node-a", "device": "eth1", "hostIfName": "eth1", "config": {}
        }))
        .unwrap()
    }

    fn with_phase(phase: AttachPhase, late: bool) -> PreparedNic {
        let mut nic = nic();
        nic.attachment = Some(Attachment {
            sandbox_id: "s".into(),
            netns_path: "/run/netns/p".into(),
            host: LinkSnapshot::default(),
            pod_if_name: "net1".into(),
            phase,
            pod: None,
            network: Some(AttachedNetwork {
                data: NetworkData {
                    interface_name: "net1".into(),
                    ..NetworkData::default()
                },
                cni_result: None,
                since: "2026-01-01T00:00:00Z".into(),
                late,
            }),
            error: Some("eth1 is busy".into()),
        });
        nic
    }

    #[test]
    fn transitions_give_the_events_users_need() {
        let attaching = with_phase(AttachPhase::Attaching, false);
        let ready =
            transition(Some(&attaching), &with_phase(AttachPhase::Attached, false)).unwrap();
        assert_eq!(
            (ready.type_, ready.reason.as_str()),
            (EventType::Normal, "NetworkReady")
        );
        let late = transition(Some(&nic()), &with_phase(AttachPhase::Attached, true)).unwrap();
        assert_eq!(
            (late.type_, late.reason.as_str()),
            (EventType::Warning, "AttachedLate")
        );
        assert!(
            transition(
                Some(&with_phase(AttachPhase::Attached, false)),
                &with_phase(AttachPhase::Attached, false)
            )
            .is_none(),
            "no change, no Event"
        );
        let stuck = transition(
            Some(&attaching),
            &with_phase(AttachPhase::DetachFailed, false),
        )
        .unwrap();
        assert_eq!(stuck.reason, "DetachFailed");
        assert!(stuck.note.unwrap().contains("eth1 is busy"));
        let mut failed = nic();
        failed.failure = Some(NicFailure {
            reason: FailureReason::AttachFailed,
            message: "interface.mtu: 9000 is above the maximum 1500".into(),
            since: "2026-01-01T00:00:00Z".into(),
        });
        let event = transition(Some(&nic()), &failed).unwrap();
        assert_eq!(event.reason, "AttachFailed");
        assert!(event.note.unwrap().contains("interface.mtu"));
        assert!(
            transition(Some(&failed), &failed).is_none(),
            "the same failure again is not news"
        );
    }
}
