//! The condition writer (`netclaim controller`, one replica): sets `Accepted`, `Ready`,
//! `Conflicted` and `InUse` on every PodNetwork of this provider, by server-side apply on
//! the status subresource (field manager [`FIELD_MANAGER`]), and keeps the in-use finalizer
//! ([`podnetwork::in_use_finalizer`]) on them.
//!
//! Level-triggered: it follows the PodNetworks, this driver's ResourceSlices and the
//! ResourceClaims and, after every change, computes each network's conditions and
//! finalizer from the spec, the published devices and the allocated claims, and writes
//! what differs from what the API holds. A failed write is retried after [`RETRY`].
//!
//! - `Accepted`: `True`/`Accepted`, or `False`/`InvalidParameters` with the field path
//!   (`spec.parameters.devices: ...`).
//! - `Ready`: `False`/`AdministrativelyDisabled` when `spec.enabled` is false,
//!   `False`/`ConditionsNotReady` when the parameters are invalid (the message says why),
//!   else `True`/`Ready`.
//! - `Conflicted`: `True`/`DevicesInOtherNetworks` naming each node's device that this
//!   network and another enabled, accepted network both select (such a device is in
//!   neither), else `False`/`NoConflicts`. The devices are read from the ResourceSlices,
//!   as the node agents publish them (without their `podNetwork` attribute), so the writer
//!   and the agents decide with the same selectors over the same attributes.
//! - `InUse`: `True`/`ClaimsHoldDevices` naming the claims (`namespace/name`) holding a
//!   device of the network, else `False`/`NoClaims`. A claim holds a device of the network
//!   when its allocation names one of this driver's devices published with the network's
//!   `podNetwork` attribute (a device in a pod keeps it), or when the node agent reported
//!   the network in the claim's `status.devices[].data.podNetwork` (which outlives a NIC
//!   that vanished from its slice).
//! - `Ready` is also `False`/`Deleting` once the network is being deleted: the node agents
//!   withdraw its free devices at once (they read `deletionTimestamp` themselves).
//!
//! # Deletion
//! Every network of this provider carries the finalizer; it is removed once the network is
//! being deleted and no claim holds its devices, so the object (and the name the pods'
//! devices report) outlives its last user. The finalizer of a network whose provider
//! changed away from this one is removed too. Finalizer writes are merge patches that
//! carry the `resourceVersion` read, so a concurrent change makes them fail (409) and the
//! next pass, woken by the watch, decides again.
//!
//! # Why one writer
//! One Deployment replica rather than leader election among the node agents: the
//! conditions are about the whole cluster (a conflict on any node), the agents then need
//! no write access to PodNetworks, and a second replica during a rollout is harmless (the
//! same level-triggered applies, same field manager). See `docs/design.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use netclaim_api::podnetwork::{self, Verdict, desired_conditions};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{PodNetwork, agent::follow, parse};

/// The field manager of the status writes.
pub const FIELD_MANAGER: &str = "netclaim-controller";
/// How long after a failed write the controller tries again.
pub const RETRY: Duration = Duration::from_secs(2);

/// What the controller serves.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// PodNetworks whose `spec.provider` is this are served.
    pub provider: String,
    /// The driver name: whose ResourceSlices are read, and the attribute domain.
    pub driver: String,
}

#[derive(Default)]
struct Seen {
    networks: Option<BTreeMap<String, PodNetwork>>,
    slices: Option<BTreeMap<String, ResourceSlice>>,
    claims: Option<BTreeMap<String, ResourceClaim>>,
}

/// What one pass writes.
#[derive(Debug)]
pub struct Plan {
    /// Networks whose conditions differ from these, with the conditions to apply.
    pub conditions: Vec<(String, Vec<podnetwork::Condition>)>,
    /// Finalizer lists to write (after the conditions: removing the last finalizer of a
    /// network being deleted removes the object).
    pub finalizers: Vec<FinalizerWrite>,
}

/// A network's new `metadata.finalizers`, valid only against the `resourceVersion` read.
#[derive(Debug)]
pub struct FinalizerWrite {
    /// The network.
    pub name: String,
    /// The `resourceVersion` the list was computed from.
    pub resource_version: String,
    /// The whole new list (other controllers' finalizers kept).
    pub finalizers: Vec<String>,
}

/// Runs until `shutdown`.
pub async fn run(client: kube::Client, config: ControllerConfig, shutdown: CancellationToken) {
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let wake = Arc::new(Notify::new());
    let networks_api: Api<PodNetwork> = Api::all(client.clone());
    let slices_api: Api<ResourceSlice> = Api::all(client.clone());
    let follow_networks = {
        let (seen, wake) = (seen.clone(), wake.clone());
        follow(
            networks_api.clone(),
            watcher::Config::default(),
            move |all| {
                lock(&seen).networks = Some(all.clone());
                wake.notify_one();
            },
        )
    };
    let follow_slices = {
        let (seen, wake) = (seen.clone(), wake.clone());
        let fields = format!("spec.driver={}", config.driver);
        follow(
            slices_api,
            watcher::Config::default().fields(&fields),
            move |all| {
                lock(&seen).slices = Some(all.clone());
                wake.notify_one();
            },
        )
    };
    // Every claim of the cluster: ResourceClaims have no field selector for a driver. One
    // watch for the whole cluster, here in one replica, not one per node.
    let follow_claims = {
        let (seen, wake) = (seen.clone(), wake.clone());
        follow(
            Api::<ResourceClaim>::all(client.clone()),
            watcher::Config::default(),
            move |all| {
                lock(&seen).claims = Some(all.clone());
                wake.notify_one();
            },
        )
    };
    let write = async {
        loop {
            wake.notified().await;
            let plan = {
                let seen = lock(&seen);
                match (&seen.networks, &seen.slices, &seen.claims) {
                    (Some(networks), Some(slices), Some(claims)) => {
                        plan(&config, networks, slices, claims)
                    }
                    _ => continue,
                }
            };
            let mut failed = false;
            for (name, conditions) in plan.conditions {
                if let Err(error) = apply(&networks_api, &name, conditions).await {
                    tracing::warn!(network = %name, "writing the PodNetwork's status: {error}");
                    failed = true;
                }
            }
            for write in plan.finalizers {
                if let Err(error) = set_finalizers(&networks_api, &write).await {
                    tracing::warn!(network = %write.name, "writing the PodNetwork's finalizers: {error}");
                    failed = true;
                }
            }
            if failed {
                tokio::time::sleep(RETRY).await;
                wake.notify_one();
            }
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = follow_networks => {}
        () = follow_slices => {}
        () = follow_claims => {}
        () = write => {}
    }
}

fn lock(seen: &std::sync::Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What to write: the conditions each network of the provider should have (for those
/// whose status differs) and the finalizer lists that must change.
pub fn plan(
    config: &ControllerConfig,
    networks: &BTreeMap<String, PodNetwork>,
    slices: &BTreeMap<String, ResourceSlice>,
    claims: &BTreeMap<String, ResourceClaim>,
) -> Plan {
    let users = users(config, slices, claims);
    Plan {
        conditions: compute(config, networks, slices, &users),
        finalizers: finalizer_writes(config, networks, &users),
    }
}

/// The conditions each network of the provider should have, for those whose status
/// differs from them; `users` are the claims holding each network's devices.
pub fn compute(
    config: &ControllerConfig,
    networks: &BTreeMap<String, PodNetwork>,
    slices: &BTreeMap<String, ResourceSlice>,
    users: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<(String, Vec<podnetwork::Condition>)> {
    let ours: Vec<&PodNetwork> = networks
        .values()
        .filter(|n| n.spec.provider == config.provider)
        .collect();
    let parsed: BTreeMap<&str, Result<super::Parsed, String>> = ours
        .iter()
        .map(|n| {
            (
                n.name(),
                parse(&n.spec, &config.driver).map_err(|e| e.to_string()),
            )
        })
        .collect();
    let conflicts = conflicts(config, &ours, &parsed, slices);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut out = Vec::new();
    for network in ours {
        let name = network.name();
        let verdict = Verdict {
            accepted: parsed
                .get(name)
                .map_or(Ok(()), |p| p.as_ref().map(|_| ()).map_err(Clone::clone)),
            enabled: network.spec.enabled,
            conflicts: conflicts.get(name).cloned().unwrap_or_default(),
            deleting: network.metadata.deletion_timestamp.is_some(),
            users: users
                .get(name)
                .map(|claims| claims.iter().cloned().collect())
                .unwrap_or_default(),
        };
        let generation = network.metadata.generation.unwrap_or_default();
        let desired = desired_conditions(&verdict, network.status.as_ref(), generation, &now);
        let current = network
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        if desired.iter().all(|c| current.contains(c)) {
            continue;
        }
        out.push((name.to_owned(), desired));
    }
    out
}

/// For each network, the claims (`namespace/name`) holding its devices: allocated one of
/// this driver's devices that its slice publishes in the network, or reported in it by the
/// node agent (`status.devices[].data.podNetwork`).
pub fn users(
    config: &ControllerConfig,
    slices: &BTreeMap<String, ResourceSlice>,
    claims: &BTreeMap<String, ResourceClaim>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut network_of: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for slice in slices.values().filter(|s| s.spec.driver == config.driver) {
        for device in slice.spec.devices.iter().flatten() {
            if let Some(network) = super::network_attribute(device) {
                network_of.insert((&slice.spec.pool.name, &device.name), network);
            }
        }
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (key, claim) in claims {
        let Some(status) = &claim.status else {
            continue;
        };
        let allocated = status
            .allocation
            .iter()
            .filter_map(|a| a.devices.as_ref())
            .flat_map(|d| d.results.iter().flatten())
            .filter(|r| r.driver == config.driver)
            .filter_map(|r| {
                network_of
                    .get(&(r.pool.as_str(), r.device.as_str()))
                    .copied()
            });
        let reported = status
            .devices
            .iter()
            .flatten()
            .filter(|d| d.driver == config.driver)
            .filter_map(|d| {
                d.data
                    .as_ref()?
                    .0
                    .get(podnetwork::DEVICE_DATA_KEY)?
                    .as_str()
            });
        for network in allocated.chain(reported) {
            out.entry(network.to_owned())
                .or_default()
                .insert(key.clone());
        }
    }
    out
}

/// The finalizer lists to write: added to each network of the provider not being deleted,
/// removed from one being deleted that no claim holds and from one whose provider is no
/// longer this one.
fn finalizer_writes(
    config: &ControllerConfig,
    networks: &BTreeMap<String, PodNetwork>,
    users: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<FinalizerWrite> {
    let ours = podnetwork::in_use_finalizer(&config.driver);
    let mut out = Vec::new();
    for network in networks.values() {
        let current = network.metadata.finalizers.clone().unwrap_or_default();
        let has = current.contains(&ours);
        let served = network.spec.provider == config.provider;
        let deleting = network.metadata.deletion_timestamp.is_some();
        let in_use = users.contains_key(network.name());
        // Kept while served, unless a deletion may finish (nothing holds the network).
        let want = served && (!deleting || in_use);
        // A network being deleted without the finalizer is not given one: the API refuses
        // new finalizers on an object being deleted.
        let finalizers = match (has, want) {
            (false, true) if !deleting => current.into_iter().chain([ours.clone()]).collect(),
            (true, false) => current.into_iter().filter(|f| *f != ours).collect(),
            _ => continue,
        };
        out.push(FinalizerWrite {
            name: network.name().to_owned(),
            resource_version: network
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default(),
            finalizers,
        });
    }
    out
}

/// For each network, the devices it shares with another enabled, accepted network.
fn conflicts(
    config: &ControllerConfig,
    ours: &[&PodNetwork],
    parsed: &BTreeMap<&str, Result<super::Parsed, String>>,
    slices: &BTreeMap<String, ResourceSlice>,
) -> BTreeMap<String, Vec<String>> {
    let candidates: Vec<(&str, &super::Parsed)> = ours
        .iter()
        .filter(|n| n.spec.enabled)
        .filter_map(|n| match parsed.get(n.name()) {
            Some(Ok(p)) => Some((n.name(), p)),
            _ => None,
        })
        .collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if candidates.len() < 2 {
        return BTreeMap::new();
    }
    for slice in slices.values() {
        let node = slice
            .spec
            .node_name
            .clone()
            .unwrap_or_else(|| slice.name_any());
        for device in &slice.spec.devices.clone().unwrap_or_default() {
            let device = super::without_network(device);
            let selecting: Vec<&str> = candidates
                .iter()
                .filter(|(_, p)| p.selector.check(&config.driver, &device).is_ok())
                .map(|(name, _)| *name)
                .collect();
            if selecting.len() < 2 {
                continue;
            }
            for name in &selecting {
                let others: Vec<&str> = selecting.iter().filter(|o| *o != name).copied().collect();
                out.entry((*name).to_owned()).or_default().insert(format!(
                    "{node}/{} (also in {})",
                    device.name,
                    others.join(", ")
                ));
            }
        }
    }
    out.into_iter()
        .map(|(name, set)| (name, set.into_iter().collect()))
        .collect()
}

/// Writes one network's finalizer list, if its `resourceVersion` is still the one read.
async fn set_finalizers(api: &Api<PodNetwork>, write: &FinalizerWrite) -> Result<(), kube::Error> {
    let patch = json!({
        "metadata": {
            "resourceVersion": write.resource_version,
            "finalizers": write.finalizers,
        }
    });
    match api
        .patch(&write.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(network = %write.name, finalizers = ?write.finalizers, "PodNetwork finalizers written");
            Ok(())
        }
        // Deleted meanwhile: nothing left to guard.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Applies `conditions` as the status of PodNetwork `name`.
async fn apply(
    api: &Api<PodNetwork>,
    name: &str,
    conditions: Vec<podnetwork::Condition>,
) -> Result<(), kube::Error> {
    let body = json!({
        "apiVersion": podnetwork::API_VERSION,
        "kind": podnetwork::KIND,
        "metadata": {"name": name},
        "status": {"conditions": conditions},
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    tracing::info!(network = %name, "PodNetwork status written");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> ControllerConfig {
        ControllerConfig {
            provider: "netclaim.dev".into(),
            driver: "netclaim.dev".into(),
        }
    }

    fn network(name: &str, provider: &str, extra_metadata: serde_json::Value) -> PodNetwork {
        let mut metadata = json!({"name": name, "generation": 1, "resourceVersion": "7"});
        if let (Some(into), Some(extra)) = (metadata.as_object_mut(), extra_metadata.as_object()) {
            into.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "metadata": metadata,
            "spec": {"provider": provider, "parameters": {"name": "eth1"}},
        }))
        .unwrap()
    }

    fn by_name<K: kube::Resource>(objects: impl IntoIterator<Item = K>) -> BTreeMap<String, K> {
        objects.into_iter().map(|o| (o.name_any(), o)).collect()
    }

    /// A slice of node `pool` with `nic-eth1` in network `blue` and `nic-eth2` in none.
    fn slice(pool: &str) -> ResourceSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{pool}-slice")},
            "spec": {
                "driver": "netclaim.dev", "nodeName": pool,
                "pool": {"name": pool, "generation": 1, "resourceSliceCount": 1},
                "devices": [
                    {"name": "nic-eth1", "attributes": {"podNetwork": {"string": "blue"}}},
                    {"name": "nic-eth2", "attributes": {}},
                ],
            },
        }))
        .unwrap()
    }

    fn claim(namespace: &str, name: &str, status: serde_json::Value) -> (String, ResourceClaim) {
        let claim = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {},
            "status": status,
        }))
        .unwrap();
        (format!("{namespace}/{name}"), claim)
    }

    fn allocated(driver: &str, pool: &str, device: &str) -> serde_json::Value {
        json!({"allocation": {"devices": {"results": [
            {"request": "nic", "driver": driver, "pool": pool, "device": device}]}}})
    }

    #[test]
    fn a_claim_holds_a_network_by_allocation_or_by_the_agents_report() {
        let slices = by_name([slice("node-a")]);
        let claims: BTreeMap<String, ResourceClaim> = [
            claim(
                "team-a",
                "web",
                allocated("netclaim.dev", "node-a", "nic-eth1"),
            ),
            // The same name in another namespace is another claim.
            claim(
                "team-b",
                "web",
                allocated("netclaim.dev", "node-a", "nic-eth1"),
            ),
            // A device in no network, and another driver's device of the same name.
            claim(
                "team-a",
                "plain",
                allocated("netclaim.dev", "node-a", "nic-eth2"),
            ),
            claim(
                "team-a",
                "other",
                allocated("gpu.example.com", "node-a", "nic-eth1"),
            ),
            // The NIC vanished from its slice; the agent's report still names the network.
            claim(
                "team-c",
                "gone-nic",
                json!({"allocation": {"devices": {"results": [
                        {"request": "nic", "driver": "netclaim.dev", "pool": "node-b",
                         "device": "nic-eth9"}]}},
                       "devices": [{"driver": "netclaim.dev", "pool": "node-b",
                         "device": "nic-eth9", "data": {"podNetwork": "blue"}}]}),
            ),
            claim("team-a", "pending", json!({})),
        ]
        .into_iter()
        .collect();
        let users = users(&config(), &slices, &claims);
        assert_eq!(
            users,
            BTreeMap::from([(
                "blue".to_owned(),
                BTreeSet::from([
                    "team-a/web".to_owned(),
                    "team-b/web".to_owned(),
                    "team-c/gone-nic".to_owned()
                ])
            )])
        );
    }

    #[test]
    fn the_finalizer_stays_while_in_use_and_goes_when_the_deletion_may_finish() {
        let deleting = json!({"deletionTimestamp": "2026-12-02T00:00:00Z",
                              "finalizers": ["netclaim.dev/pod-network-in-use", "other/keep"]});
        let networks = by_name([
            network("new", "netclaim.dev", json!({})),
            network(
                "steady",
                "netclaim.dev",
                json!({"finalizers": ["netclaim.dev/pod-network-in-use"]}),
            ),
            network("deleting-used", "netclaim.dev", deleting.clone()),
            network("deleting-free", "netclaim.dev", deleting),
            network(
                "moved-away",
                "other.example.com",
                json!({"finalizers": ["netclaim.dev/pod-network-in-use"]}),
            ),
            network("not-ours", "other.example.com", json!({})),
            // Deleted before the controller saw it: too late to add one.
            network(
                "deleted-unseen",
                "netclaim.dev",
                json!({"deletionTimestamp": "2026-12-02T00:00:00Z", "finalizers": ["x/y"]}),
            ),
        ]);
        let users = BTreeMap::from([(
            "deleting-used".to_owned(),
            BTreeSet::from(["team-a/web".to_owned()]),
        )]);
        let writes = finalizer_writes(&config(), &networks, &users);
        let got: Vec<(&str, &str, Vec<&str>)> = writes
            .iter()
            .map(|w| {
                (
                    w.name.as_str(),
                    w.resource_version.as_str(),
                    w.finalizers.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("deleting-free", "7", vec!["other/keep"]),
                ("moved-away", "7", vec![]),
                ("new", "7", vec!["netclaim.dev/pod-network-in-use"]),
            ]
        );
    }

    #[test]
    fn a_network_being_deleted_is_not_ready_and_says_what_it_waits_for() {
        let networks = by_name([network(
            "blue",
            "netclaim.dev",
            json!({"deletionTimestamp": "2026-12-02T00:00:00Z",
                   "finalizers": ["netclaim.dev/pod-network-in-use"]}),
        )]);
        let users = BTreeMap::from([("blue".to_owned(), BTreeSet::from(["ns/c".to_owned()]))]);
        let planned = compute(&config(), &networks, &BTreeMap::new(), &users);
        let conditions = &planned[0].1;
        let get = |t: &str| conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(get("Ready").reason, "Deleting");
        assert_eq!(get("InUse").status, "True");
        assert!(get("InUse").message.contains("ns/c"));
    }
}
