//! The condition writer (`netclaim controller`, one replica): sets `Accepted`, `Ready` and
//! `Conflicted` on every PodNetwork of this provider, by server-side apply on the status
//! subresource (field manager [`FIELD_MANAGER`]).
//!
//! Level-triggered: it follows the PodNetworks and this driver's ResourceSlices and, after
//! every change, computes each network's conditions from the spec and the published
//! devices, and applies those that differ from what the API holds. A failed apply is
//! retried after [`RETRY`].
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
//!
//! # Why one writer
//! One Deployment replica rather than leader election among the node agents: the
//! conditions are about the whole cluster (a conflict on any node), the agents then need
//! no write access to PodNetworks, and a second replica during a rollout is harmless (the
//! same level-triggered applies, same field manager). See `docs/design.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceSlice;
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
    let write = async {
        loop {
            wake.notified().await;
            let (networks, slices) = {
                let seen = lock(&seen);
                match (&seen.networks, &seen.slices) {
                    (Some(n), Some(s)) => (n.clone(), s.clone()),
                    _ => continue,
                }
            };
            let desired = compute(&config, &networks, &slices);
            let mut failed = false;
            for (name, conditions) in desired {
                if let Err(error) = apply(&networks_api, &name, conditions).await {
                    tracing::warn!(network = %name, "writing the PodNetwork's status: {error}");
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
        () = write => {}
    }
}

fn lock(seen: &std::sync::Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The conditions each network of the provider should have, for those whose status
/// differs from them.
pub fn compute(
    config: &ControllerConfig,
    networks: &BTreeMap<String, PodNetwork>,
    slices: &BTreeMap<String, ResourceSlice>,
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
