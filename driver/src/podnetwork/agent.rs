//! The node agent's side (`netclaim run`): watches the PodNetworks, keeps the node's
//! [`PodNetworks`] view current and makes discovery republish when it changes, so a
//! network becoming Ready gives its devices the `podNetwork` attribute and one that stops
//! being Ready (or is deleted) takes it away from the devices not in pods.
//!
//! # Errors
//! None returned: a watch that fails (the CRD not installed, the API away) is retried with
//! a backoff from 1 s to 5 min, reset once a list succeeds, and logged (a node agent must
//! not poll the API server every second on a cluster without the CRD: 5,000 nodes would
//! make that thousands of LISTs a second); the view keeps its last content meanwhile (a network
//! once Ready stays so until the agent hears otherwise; prepare still checks the view).

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::{StreamExt, TryStreamExt};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::{NetworkSet, PodNetwork, PodNetworks};
use crate::discovery::Inventory;

/// What the agent serves.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// PodNetworks whose `spec.provider` is this are served.
    pub provider: String,
    /// The driver name: the attribute domain of the selectors and of `podNetwork`.
    pub driver: String,
}

/// Follows the PodNetworks until `shutdown`, replacing `networks` after every change and
/// waking `inventory`'s discovery to republish.
pub async fn run(
    client: kube::Client,
    config: AgentConfig,
    networks: PodNetworks,
    inventory: Inventory,
    shutdown: CancellationToken,
) {
    let api: Api<PodNetwork> = Api::all(client);
    let follow = follow(api, watcher::Config::default(), |objects| {
        let set = NetworkSet::of(objects.values(), &config.provider, &config.driver);
        let summary: Vec<String> = set
            .networks()
            .values()
            .map(|n| match &n.ready {
                Ok(()) => format!("{}: Ready", n.name),
                Err(why) => format!("{}: not Ready ({why})", n.name),
            })
            .collect();
        tracing::info!(networks = ?summary, "PodNetworks changed");
        networks.replace(set);
        inventory.republish();
    });
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = follow => {}
    }
}

/// First wait after a failed list or watch.
const RETRY_MIN: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest wait between attempts (also how long a CRD installed later may go unnoticed).
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(300);

/// Watches `api` (retrying with backoff) and calls `changed` with every object by key
/// (`name`, or `namespace/name` for a namespaced kind) after the initial list and after
/// each change.
pub async fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    mut changed: impl FnMut(&BTreeMap<String, K>),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let mut objects: BTreeMap<String, K> = BTreeMap::new();
    let mut listing: BTreeMap<String, K> = BTreeMap::new();
    let mut stream = watcher::watcher(api, config).boxed();
    let mut retry_in = RETRY_MIN;
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Init)) => listing.clear(),
            Ok(Some(Event::InitApply(object))) => {
                listing.insert(key_of(&object), object);
            }
            Ok(Some(Event::InitDone)) => {
                objects = std::mem::take(&mut listing);
                retry_in = RETRY_MIN;
                changed(&objects);
            }
            Ok(Some(Event::Apply(object))) => {
                objects.insert(key_of(&object), object);
                changed(&objects);
            }
            Ok(Some(Event::Delete(object))) => {
                objects.remove(&key_of(&object));
                changed(&objects);
            }
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(kind = %K::kind(&K::DynamicType::default()), ?retry_in, "watch failed, retrying: {error}");
                // The watcher retries on the next poll: waiting here is the backoff.
                tokio::time::sleep(retry_in).await;
                retry_in = (retry_in * 2).min(RETRY_MAX);
            }
        }
    }
}

/// `name`, or `namespace/name`: names are unique only within a namespace.
fn key_of<K: Resource>(object: &K) -> String {
    match object.namespace() {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}
