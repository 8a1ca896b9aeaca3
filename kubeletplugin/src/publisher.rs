//! Publishes a driver's devices as this node's `resource.k8s.io/v1` ResourceSlices.
//!
//! # Example
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use kubeletplugin::{DriverResources, Pool, PublisherConfig, ResourceSlicePublisher};
//!
//! let client = kube::Client::try_default().await?;
//! let publisher = ResourceSlicePublisher::start(
//!     client,
//!     PublisherConfig {
//!         driver_name: "netclaim.dev".into(),
//!         node_name: "node-a".into(),
//!         node_uid: None,
//!     },
//! );
//! let device = serde_json::from_value(serde_json::json!({ "name": "eth1" }))?;
//! let mut resources = DriverResources::default();
//! resources.pools.insert("node-a".into(), Pool::new([device]));
//! publisher.update(resources);
//!
//! // Wait until it is written.
//! let mut status = publisher.status();
//! status.wait_for(|s| s.synced_generation >= 1).await?;
//! publisher.shutdown(true).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//! - Slices are created with `generateName` `<node>-<driver>-` (made a DNS subdomain), carry
//!   `spec.driver`, `spec.nodeName`, `spec.pool {name, generation, resourceSliceCount}` and a
//!   controller owner reference to the Node, so the API server's garbage collector removes
//!   them with the node.
//! - A pool is split into slices of at most 128 devices (64 when any of its devices has
//!   taints or consumes counters). When a pool's content differs from what is published, its
//!   generation is raised above every published slice's generation for that pool and all its
//!   slices are rewritten: existing slice objects are updated, missing ones created, surplus
//!   ones and slices of pools that no longer exist deleted. Nothing is written when the
//!   published slices already equal the desired ones, compared semantically (see below).
//! - Device taints keep the `timeAdded` the server gave them while their key, value and
//!   effect stay the same (it is copied from the published taint into every rewrite), so a
//!   rewrite for another reason does not restart a toleration's `tolerationSeconds`.
//!
//! # What counts as a difference
//! The API server changes what it stores: it fills in a taint's `timeAdded` (defaulting)
//! and drops fields of features that are off (`dropDisabledFields`: taints without
//! `DRADeviceTaints`, consumable-capacity fields without `DRAConsumableCapacity`; both off
//! by default in Kubernetes 1.34 and 1.35). Comparing field by field would see a
//! difference after every write and rewrite the pool in a loop. So:
//! - a taint equals another with the same key, value and effect when either has no
//!   `timeAdded` or both are within a second of each other (as the Go helper's
//!   `DevicesDeepEqual`);
//! - each write's answer (the object as stored) is remembered with what was sent: a
//!   published slice equal to what the server stored for the same desired devices is
//!   current, whatever the server dropped or filled in. Dropped fields are reported in
//!   [`PublishStatus::dropped_fields`] and logged once per write, and not written again
//!   until the desired devices change (or the publisher restarts: one write then).
//! - The publisher watches this node's slices of this driver and keeps its view of them from
//!   the watch (see [below](#the-view-of-what-is-published)): a pass compares with that view
//!   and lists nothing, so a pass that finds nothing to do sends no request, and one that
//!   does sends only its writes. Slices deleted or changed by someone else are repaired
//!   from the watch's event alone.
//! - Conflicts (409), throttling (429), server errors (5xx), a missing Node (404) and
//!   transport errors are retried with capped exponential backoff and jitter. Other API
//!   rejections (e.g. 422 Invalid) are reported in [`PublishStatus::last_error`] and a
//!   `tracing` warning, and retried only after a minute or on the next
//!   [`ResourceSlicePublisher::update`], never in a hot loop.
//! - Generations of a pool only grow, also when someone deletes all of its slices.
//!
//! # The view of what is published
//! A map from name to slice, owned by the publisher's task. Not kube's `reflector::Store`:
//! nothing else reads it (no lock needed), and the publisher must lay its own writes over
//! the watch's view at once and keep them when the watch reports an earlier version
//! later, which a reflector's writer (it applies every event as it comes) does not do.
//! - Each slice is kept whole but for its devices, which are kept apart: a device the
//!   server stored exactly as the desired one (the same value) is that desired device's
//!   `Arc`, not a copy, both for slices the view takes in and, when the desired devices
//!   change, for those it holds. Only devices stored differently (a taint's `timeAdded`
//!   the server filled in, a field it dropped) or no longer desired are the view's own.
//!   A pool published as desired thus costs the publisher no second copy of its devices.
//! - The watch lists this node's slices of this driver once at start (`Init`, `InitApply`,
//!   `InitDone`) and again only when it has lost its place (410 Gone, a failed list); an
//!   ended watch resumes from its last resourceVersion without a list. Each list replaces
//!   the view at `InitDone`, as a reflector does.
//! - Nothing is written until the first list is complete, nor while the watch lists again:
//!   a pass from a partial view would create slices it has not seen yet (with
//!   `generateName`: duplicates). A desired state given meanwhile is published at
//!   `InitDone`.
//! - The list is a consistent read (`ListSemantic::MostRecent`), and it is sent after the
//!   publisher's last write returned (no pass runs from `Init` to `InitDone`), so it shows
//!   every write of this publisher.
//! - A successful create or update puts the answer (the slice as stored) into the view at
//!   once, a delete (or a 404) takes the slice out, so a pass never acts on a view older than
//!   its own writes (the watch's events for them come later, and trigger a pass that finds
//!   nothing to do).
//! - A watch event that comes after the publisher's own write for an earlier version of
//!   that slice is not taken: resourceVersions are compared as integers (kube-apiserver's
//!   are etcd revisions; client-go's `IntegerResourceVersionMutationCache` does the same),
//!   and an `Apply` for a slice the publisher deleted is ignored until its `Delete` comes.
//!   So the publisher's own writes coming back cause no write. Should an API server's
//!   resourceVersions not be integers, such a late event is taken: the next pass sees the
//!   earlier version and rewrites the pool, in which that slice's guarded update is a 409
//!   followed by a GET (below), and the retry rewrites the pool once more from the current
//!   version: one extra rewrite, never a loop.
//! - Every update carries the viewed slice's resourceVersion, so a slice that changed since
//!   the view saw it is a 409 that changes nothing. After a 409 the publisher GETs that
//!   slice into the view (no LIST), and retries with the backoff: the retry writes over the
//!   current version, whether or not the watch has told by then. An update that finds the
//!   slice gone (404) takes it out of the view, and the retry creates a slice instead.
//! - `shutdown(true)` deletes this node's slices with one `deletecollection`.
//!
//! # Assumptions
//! - Nobody else writes slices for this node and driver (the kubelet may delete them).
//! - Device names are unique within a pool.
//! - A slice's resourceVersions grow as integers (kube-apiserver's do); if they do not, see
//!   above: a late event can cost one extra rewrite.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{
    Device, DeviceTaint, ResourcePool, ResourceSlice, ResourceSliceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::ListSemantic;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Everything a driver offers on this node, by pool name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DriverResources {
    /// Pools by name. A node-local driver usually has one pool named after the node.
    pub pools: BTreeMap<String, Pool>,
}

/// One resource pool: its devices, split into slices of at most 128 by the publisher.
///
/// The devices are shared, not owned: the publisher holds the latest pool it was given
/// until the next [`ResourceSlicePublisher::update`], and a driver that keeps the same
/// devices elsewhere (its inventory, a channel) then holds them once in memory, not twice.
/// The publisher's view of the published slices shares them too: a device the server
/// stored exactly as desired is held once (see the [module docs](self#the-view-of-what-is-published)).
/// A driver that gives the same `Arc` again for a device that did not change lets the
/// publisher recognize it by pointer instead of comparing it field by field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pool {
    /// The pool's devices, in the order they should be published.
    pub devices: Vec<Arc<Device>>,
}

impl Pool {
    /// A pool of `devices`, each put into its own `Arc`.
    pub fn new(devices: impl IntoIterator<Item = Device>) -> Self {
        Self {
            devices: devices.into_iter().map(Arc::new).collect(),
        }
    }
}

/// Where and as whom the publisher writes slices.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// The DRA driver name (`spec.driver`).
    pub driver_name: String,
    /// The node the slices belong to (`spec.nodeName`, and the owner reference).
    pub node_name: String,
    /// The Node object's UID for the owner reference; looked up when `None`.
    pub node_uid: Option<String>,
}

/// The publisher's view of its last attempt, for drivers and tests to observe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishStatus {
    /// How many times the desired resources were fully written: it grows after every
    /// successful pass that wrote something or that confirmed a new [`DriverResources`].
    pub synced_generation: u64,
    /// The last error (API rejection or transport failure), cleared on success. Also a
    /// watch of this node's slices failing before it could list them (nothing is written
    /// until it has), cleared once it has.
    pub last_error: Option<String>,
    /// Fields the API server dropped from the devices last written (a feature it has
    /// off), as `spec.devices[<device name>].<field path>`, sorted; empty when it stored
    /// everything. Updated by every write.
    pub dropped_fields: Vec<String>,
}

/// Most devices in one slice.
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// Most devices in one slice when a device has taints or consumes counters.
pub const MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS: usize = 64;

/// First retry delay after a retryable failure.
const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// When to try again after the API rejected what was written (e.g. 422 Invalid).
const REJECTED_RETRY: Duration = Duration::from_secs(60);
/// Attempts at deleting this node's slices on shutdown.
const SHUTDOWN_DELETE_ATTEMPTS: u32 = 5;
/// How a watch failure starts in [`PublishStatus::last_error`].
const WATCH_FAILED: &str = "watching ResourceSlices";
/// How far apart two `timeAdded` of one taint may be and still be the same (the API
/// stores whole seconds).
const TAINT_TIME_TOLERANCE_SECONDS: i64 = 1;

/// Keeps this node's ResourceSlices equal to the latest [`DriverResources`] it was given.
///
/// It runs a background task: [`ResourceSlicePublisher::update`] never blocks and the
/// latest call wins.
pub struct ResourceSlicePublisher {
    desired: watch::Sender<Option<DriverResources>>,
    status: watch::Receiver<PublishStatus>,
    stop: CancellationToken,
    delete_on_stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl ResourceSlicePublisher {
    /// Starts the publisher's background task. Until the first [`Self::update`], it writes
    /// nothing (existing slices are left alone).
    pub fn start(client: kube::Client, config: PublisherConfig) -> Self {
        let (desired, desired_rx) = watch::channel(None);
        let (status_tx, status) = watch::channel(PublishStatus::default());
        let stop = CancellationToken::new();
        let delete_on_stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            slices: Api::all(client.clone()),
            nodes: Api::all(client),
            node_uid: config.node_uid.clone(),
            config,
            status: status_tx,
            generations: BTreeMap::new(),
            stored: BTreeMap::new(),
            view: SliceView::default(),
        };
        let task = tokio::spawn(worker.run(desired_rx, stop.clone(), delete_on_stop.clone()));
        ResourceSlicePublisher {
            desired,
            status,
            stop,
            delete_on_stop,
            task,
        }
    }

    /// Sets what should be published; returns at once.
    pub fn update(&self, resources: DriverResources) {
        self.desired.send_replace(Some(resources));
    }

    /// A receiver that sees every change of [`PublishStatus`].
    pub fn status(&self) -> watch::Receiver<PublishStatus> {
        self.status.clone()
    }

    /// Stops the task; with `delete_slices`, deletes this node's slices of this driver first.
    pub async fn shutdown(self, delete_slices: bool) {
        self.delete_on_stop.store(delete_slices, Ordering::SeqCst);
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "ResourceSlice publisher task failed");
        }
    }
}

/// The background task's state.
struct Worker {
    slices: Api<ResourceSlice>,
    nodes: Api<Node>,
    config: PublisherConfig,
    node_uid: Option<String>,
    status: watch::Sender<PublishStatus>,
    /// The last generation written per pool, so generations only grow even when someone
    /// deletes all of a pool's slices.
    generations: BTreeMap<String, i64>,
    /// Per pool, for each slice this publisher last wrote whose devices the server did not
    /// store as sent (fields of a disabled feature dropped): what was sent and what stored.
    stored: BTreeMap<String, Vec<StoredChunk>>,
    /// This node's slices of this driver, from the watch and this publisher's own writes.
    view: SliceView,
}

/// One slice's devices as sent (the desired devices), and as the server stored them (the
/// view's); both shared.
#[derive(Clone, Debug)]
struct StoredChunk {
    sent: Vec<Arc<Device>>,
    stored: Vec<Arc<Device>>,
}

/// What one reconcile pass did.
#[derive(Default)]
struct PassOutcome {
    wrote: bool,
    retryable: Vec<String>,
    rejected: Vec<String>,
    /// Fields the server dropped from what this pass wrote; `None` when it wrote nothing.
    dropped: Option<Vec<String>>,
}

/// This node's slices of this driver as the publisher knows them, by name: what the watch
/// reported, with the publisher's own writes laid over it at once (see the module docs).
#[derive(Debug, Default)]
struct SliceView {
    slices: BTreeMap<String, ViewedSlice>,
    /// Whether `slices` is complete: from the watch's first `InitDone` on, except while it
    /// lists again.
    synced: bool,
    /// What a list in progress has returned so far (between `Init` and `InitDone`).
    listing: Option<BTreeMap<String, ViewedSlice>>,
    /// Slices this publisher deleted (or found gone) whose `Delete` event has not come yet:
    /// an `Apply` event still on its way for one of them is older than the deletion.
    deleted: BTreeSet<String>,
    /// The desired devices, whose allocations the viewed slices share.
    desired: DesiredDevices,
}

/// One slice in the view: the object without its devices (metadata, pool, node), and
/// the devices apart. A device stored exactly as desired is the desired device's `Arc`,
/// so a published pool that matches the desired one costs no second copy of its devices;
/// only devices the server stored differently (a taint's `timeAdded` it filled in, a
/// field it dropped) or that are no longer desired are the view's own.
#[derive(Clone, Debug)]
struct ViewedSlice {
    /// The slice with `spec.devices` taken out (`None`).
    slice: ResourceSlice,
    /// `spec.devices` as stored (an absent list is empty).
    devices: Vec<Arc<Device>>,
}

impl ViewedSlice {
    fn name(&self) -> String {
        self.slice.name_any()
    }
}

/// The latest desired devices by pool and name, for the view to share.
#[derive(Debug, Default)]
struct DesiredDevices {
    pools: BTreeMap<String, HashSet<ByName>>,
}

/// A device keyed by its name (unique within a pool).
#[derive(Debug)]
struct ByName(Arc<Device>);

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

impl std::hash::Hash for ByName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl DesiredDevices {
    fn of(resources: &DriverResources) -> Self {
        let pools = resources
            .pools
            .iter()
            .map(|(name, pool)| {
                let devices = pool.devices.iter().cloned().map(ByName).collect();
                (name.clone(), devices)
            })
            .collect();
        Self { pools }
    }

    /// The desired device of `pool` equal to `device`, if there is one.
    fn get(&self, pool: &str, device: &Device) -> Option<&Arc<Device>> {
        let desired = &self.pools.get(pool)?.get(device.name.as_str())?.0;
        (std::ptr::eq(&**desired, device) || **desired == *device).then_some(desired)
    }

    /// `slice` for the view: its devices taken out, each shared with the equal desired
    /// device where there is one.
    fn view(&self, mut slice: ResourceSlice) -> ViewedSlice {
        let pool = slice.spec.pool.name.as_str();
        let devices = slice
            .spec
            .devices
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|device| match self.get(pool, &device) {
                Some(desired) => desired.clone(),
                None => Arc::new(device),
            })
            .collect();
        ViewedSlice { slice, devices }
    }

    /// Replaces the view's own copies in `slices` by the equal desired devices.
    fn share(&self, slices: &mut BTreeMap<String, ViewedSlice>) {
        for viewed in slices.values_mut() {
            let pool = viewed.slice.spec.pool.name.as_str();
            for device in &mut viewed.devices {
                if let Some(desired) = self.get(pool, device) {
                    *device = desired.clone();
                }
            }
        }
    }
}

impl SliceView {
    fn is_synced(&self) -> bool {
        self.synced
    }

    /// Takes in one watch event.
    fn apply(&mut self, event: watcher::Event<ResourceSlice>) {
        match event {
            // A list starts (again, after a failed one or a lost watch): until it is done,
            // the view may lack slices.
            watcher::Event::Init => {
                self.synced = false;
                self.listing = Some(BTreeMap::new());
            }
            watcher::Event::InitApply(slice) => {
                if let Some(listing) = self.listing.as_mut() {
                    listing.insert(slice.name_any(), self.desired.view(slice));
                }
            }
            // The list replaces the view, as a reflector's store does. It is a consistent
            // read sent after this publisher's last write returned (no pass runs from `Init`
            // to here), so it is newer than anything the view held.
            watcher::Event::InitDone => {
                if let Some(listed) = self.listing.take() {
                    self.slices = listed;
                }
                self.deleted.clear();
                self.synced = true;
            }
            watcher::Event::Apply(slice) => {
                if !self.deleted.contains(&slice.name_any()) {
                    self.put(slice);
                }
            }
            watcher::Event::Delete(slice) => {
                let name = slice.name_any();
                self.slices.remove(&name);
                self.deleted.remove(&name);
            }
        }
    }

    /// Puts a slice into the view unless the view holds a newer version of it (its own
    /// write's answer, when the watch's event for an earlier version comes later); the
    /// slice as viewed (its devices shared with the desired ones where equal).
    fn put(&mut self, slice: ResourceSlice) -> ViewedSlice {
        let viewed = self.desired.view(slice);
        let name = viewed.name();
        let older = self
            .slices
            .get(&name)
            .is_some_and(|held| is_older(&viewed.slice, &held.slice));
        if !older {
            self.slices.insert(name, viewed.clone());
        }
        viewed
    }

    /// Takes in new desired devices: what the view holds, and what it takes in from now
    /// on, shares the allocations of the equal ones.
    fn set_desired(&mut self, resources: &DriverResources) {
        self.desired = DesiredDevices::of(resources);
        self.desired.share(&mut self.slices);
        if let Some(listing) = self.listing.as_mut() {
            self.desired.share(listing);
        }
    }

    /// Takes a slice out of the view: this publisher deleted it, or found it gone.
    fn remove(&mut self, name: &str) {
        self.slices.remove(name);
        self.deleted.insert(name.to_owned());
    }

    /// The viewed slices, by pool name (the devices shared, not copied).
    fn by_pool(&self) -> BTreeMap<String, Vec<ViewedSlice>> {
        let mut by_pool: BTreeMap<String, Vec<ViewedSlice>> = BTreeMap::new();
        for viewed in self.slices.values() {
            by_pool
                .entry(viewed.slice.spec.pool.name.clone())
                .or_default()
                .push(viewed.clone());
        }
        by_pool
    }
}

/// Whether `a` is an earlier version of the object than `b`. kube-apiserver's
/// resourceVersions are etcd revisions, integers that grow with every write; they are
/// compared as such, as client-go's `IntegerResourceVersionMutationCache` does. One that is
/// not an integer (an API server that made them opaque) is never older: the watch's
/// event then wins, and a stale one costs one extra rewrite (see the module docs).
fn is_older(a: &ResourceSlice, b: &ResourceSlice) -> bool {
    let version = |s: &ResourceSlice| {
        s.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    matches!((version(a), version(b)), (Some(a), Some(b)) if a < b)
}

impl Worker {
    async fn run(
        mut self,
        mut desired: watch::Receiver<Option<DriverResources>>,
        stop: CancellationToken,
        delete_on_stop: Arc<AtomicBool>,
    ) {
        let selector = self.field_selector();
        // The list at start and after a lost watch (410 Gone) is a consistent read: it starts
        // after this task's last write returned, so it shows every write (see `SliceView`).
        let mut slice_events = watcher(
            self.slices.clone(),
            watcher::Config::default()
                .fields(&selector)
                .list_semantic(ListSemantic::MostRecent),
        )
        .default_backoff()
        .boxed()
        .fuse();
        let mut backoff = Backoff::default();
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut dirty = false;
        let mut new_desired = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = desired.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // New desired state: try at once, whatever the backoff said.
                    dirty = true;
                    new_desired = true;
                    retry_at = None;
                    backoff.reset();
                }
                event = slice_events.next() => {
                    let Some(event) = event else { break };
                    dirty |= self.on_slice_event(event);
                    // Take in what has arrived already, so that one pass sees a burst (someone
                    // deleting every slice is one event per slice) instead of acting on part.
                    while let Some(Some(event)) = slice_events.next().now_or_never() {
                        dirty |= self.on_slice_event(event);
                    }
                }
                _ = sleep_until_opt(retry_at) => {
                    retry_at = None;
                    dirty = true;
                }
            }
            // While a retry is pending, other triggers wait for it: no hammering a failing API.
            // Until the watch has listed (and while it lists again), the view may lack slices:
            // a pass then would create duplicates, so nothing is written.
            if !dirty || retry_at.is_some() || !self.view.is_synced() {
                continue;
            }
            // A watch event can win the race with the first update: its pass then takes the
            // new desired state, which counts as new even when nothing had to be written
            // (a restart or a handover finds its slices already in place).
            new_desired |= desired.has_changed().unwrap_or(false);
            let Some(resources) = desired.borrow_and_update().clone() else {
                continue;
            };
            if new_desired {
                self.view.set_desired(&resources);
            }
            dirty = false;
            let outcome = tokio::select! {
                _ = stop.cancelled() => break,
                outcome = self.reconcile(&resources) => outcome,
            };
            if let Some(dropped) = &outcome.dropped {
                self.status.send_if_modified(|s| {
                    let changed = s.dropped_fields != *dropped;
                    s.dropped_fields.clone_from(dropped);
                    changed
                });
            }
            if outcome.retryable.is_empty() && outcome.rejected.is_empty() {
                backoff.reset();
                let confirmed = outcome.wrote || new_desired;
                new_desired = false;
                self.status.send_if_modified(|s| {
                    let changed = confirmed || s.last_error.is_some();
                    s.synced_generation += u64::from(confirmed);
                    s.last_error = None;
                    changed
                });
                continue;
            }
            let mut errors = outcome.rejected.clone();
            errors.extend(outcome.retryable.iter().cloned());
            let message = errors.join("; ");
            tracing::warn!(error = %message, "publishing ResourceSlices failed");
            self.status.send_if_modified(|s| {
                let changed = s.last_error.as_deref() != Some(message.as_str());
                s.last_error = Some(message.clone());
                changed
            });
            // Retryable failures come back soon; rejections only after a long pause (or a new
            // update), so a bad device cannot make the publisher rewrite its pool in a loop.
            let delay = if outcome.retryable.is_empty() {
                REJECTED_RETRY
            } else {
                backoff.next_delay()
            };
            retry_at = Some(tokio::time::Instant::now() + delay);
        }
        if delete_on_stop.load(Ordering::SeqCst) {
            self.delete_all().await;
        }
    }

    /// Takes one item of the watch into the view; whether it is worth a pass.
    fn on_slice_event(
        &mut self,
        event: Result<watcher::Event<ResourceSlice>, watcher::Error>,
    ) -> bool {
        match event {
            Ok(event) => {
                let listed = matches!(event, watcher::Event::InitDone);
                self.view.apply(event);
                if listed {
                    // A watch failure reported while the view was not synced is over.
                    self.status.send_if_modified(|s| {
                        let stale = s
                            .last_error
                            .as_deref()
                            .is_some_and(|e| e.starts_with(WATCH_FAILED));
                        if stale {
                            s.last_error = None;
                        }
                        stale
                    });
                }
                true
            }
            // The watcher watches again or re-lists, with backoff, by itself.
            Err(error) if self.view.is_synced() => {
                tracing::debug!(%error, "ResourceSlice watch failed");
                false
            }
            // No pass can run until the watch has listed: say why nothing is published.
            Err(error) => {
                let message = format!("{WATCH_FAILED}: {error}");
                tracing::warn!(%error, "watching this node's ResourceSlices failed");
                self.status.send_if_modified(|s| {
                    let changed = s.last_error.as_deref() != Some(message.as_str());
                    s.last_error = Some(message.clone());
                    changed
                });
                false
            }
        }
    }

    fn field_selector(&self) -> String {
        format!(
            "spec.nodeName={},spec.driver={}",
            self.config.node_name, self.config.driver_name
        )
    }

    /// One pass: compare the view of what is published with `resources`, write the
    /// difference.
    async fn reconcile(&mut self, resources: &DriverResources) -> PassOutcome {
        let mut outcome = PassOutcome::default();
        let owner = match self.node_owner().await {
            Ok(owner) => owner,
            Err(error) => {
                record(&mut outcome, "looking up the Node", error);
                return outcome;
            }
        };
        let mut by_pool = self.view.by_pool();
        for (pool_name, pool) in &resources.pools {
            let published = by_pool.remove(pool_name).unwrap_or_default();
            self.sync_pool(pool_name, pool, published, &owner, &mut outcome)
                .await;
        }
        // Whatever is left belongs to pools that no longer exist.
        for viewed in by_pool.into_values().flatten() {
            self.delete_slice(&viewed.name(), &mut outcome).await;
        }
        self.stored
            .retain(|pool_name, _| resources.pools.contains_key(pool_name));
        if let Some(dropped) = outcome.dropped.as_mut() {
            dropped.sort();
            dropped.dedup();
        }
        outcome
    }

    async fn node_owner(&mut self) -> Result<OwnerReference, kube::Error> {
        let uid = match &self.node_uid {
            Some(uid) => uid.clone(),
            None => {
                let node = self.nodes.get(&self.config.node_name).await?;
                let uid = node.metadata.uid.unwrap_or_default();
                self.node_uid = Some(uid.clone());
                uid
            }
        };
        Ok(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.config.node_name.clone(),
            uid,
            controller: Some(true),
            block_owner_deletion: None,
        })
    }

    /// Rewrites one pool's slices at a new generation unless they already match.
    async fn sync_pool(
        &mut self,
        pool_name: &str,
        pool: &Pool,
        mut published: Vec<ViewedSlice>,
        owner: &OwnerReference,
        outcome: &mut PassOutcome,
    ) {
        let chunks = split_devices(&pool.devices);
        if self.is_current(pool_name, &chunks, &published, owner) {
            return;
        }
        let highest_published = published.iter().map(|s| s.slice.spec.pool.generation).max();
        let remembered = self.generations.get(pool_name).copied();
        let generation = highest_published.max(remembered).map_or(1, |g| g + 1);
        self.generations.insert(pool_name.to_string(), generation);
        let count = i64::try_from(chunks.len()).unwrap_or(i64::MAX);
        published.sort_by(|a, b| a.slice.metadata.name.cmp(&b.slice.metadata.name));
        let taint_times = published_taint_times(&published);
        let mut stored = Vec::new();
        let mut existing = published.into_iter();
        for chunk in chunks {
            // The request's body: a transient copy of the chunk, with the taint times of
            // what is published.
            let mut devices: Vec<Device> = chunk.iter().map(|d| Device::clone(d)).collect();
            carry_taint_times(&mut devices, &taint_times);
            let spec = self.slice_spec(pool_name, generation, count, devices);
            let written = match existing.next() {
                Some(viewed) => self.update_slice(viewed.slice, spec, owner, outcome).await,
                None => self.create_slice(spec, owner, outcome).await,
            };
            if let Some(written) = written {
                let kept = written.devices;
                // Compared with the desired chunk: the times carried into the body are the
                // ones the server keeps, and a dropped `taints` is reported whole.
                outcome
                    .dropped
                    .get_or_insert_with(Vec::new)
                    .extend(dropped_fields(chunk, &kept));
                // Kept only where the server changed something: an equal chunk matches the
                // desired devices directly, and two more copies of every device (1,000 on
                // a large node) would stay in memory for nothing.
                if !devices_equivalent(chunk, &kept) {
                    stored.push(StoredChunk {
                        sent: chunk.to_vec(),
                        stored: kept,
                    });
                }
            }
        }
        for surplus in existing {
            self.delete_slice(&surplus.name(), outcome).await;
        }
        if let Some(dropped) = outcome.dropped.as_ref().filter(|d| !d.is_empty()) {
            tracing::warn!(
                pool = pool_name,
                fields = %dropped.join(", "),
                "the API server dropped fields of the published devices (a feature gate it \
                 has off, such as DRADeviceTaints or DRAConsumableCapacity); not rewriting \
                 them until the devices change"
            );
        }
        self.stored.insert(pool_name.to_string(), stored);
    }

    /// Whether the published slices of a pool are exactly the desired chunks, at one
    /// generation, with the right count and owner.
    fn is_current(
        &self,
        pool_name: &str,
        chunks: &[&[Arc<Device>]],
        published: &[ViewedSlice],
        owner: &OwnerReference,
    ) -> bool {
        let Some(generation) = published.first().map(|s| s.slice.spec.pool.generation) else {
            return false;
        };
        let count = i64::try_from(chunks.len()).unwrap_or(i64::MAX);
        let mut unmatched: Vec<&[Arc<Device>]> = chunks.to_vec();
        published.len() == chunks.len()
            && published.iter().all(|viewed| {
                let (slice, devices) = (&viewed.slice, viewed.devices.as_slice());
                let spec = &slice.spec;
                let owned = slice
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|refs| refs.contains(owner));
                let position = unmatched
                    .iter()
                    .position(|chunk| self.is_published_as(pool_name, chunk, devices));
                if let Some(position) = position {
                    unmatched.swap_remove(position);
                }
                owned
                    && position.is_some()
                    && spec.pool.generation == generation
                    && spec.pool.resource_slice_count == count
                    && spec.pool.name == pool_name
                    && spec.all_nodes.is_none()
                    && spec.node_selector.is_none()
                    && spec.per_device_node_selection.is_none()
                    && spec.shared_counters.is_none()
            })
    }

    /// Whether `published` is what this publisher's write of `desired` left on the server:
    /// the same devices (taint times aside), or what the server stored when this
    /// publisher last wrote these devices.
    fn is_published_as(
        &self,
        pool_name: &str,
        desired: &[Arc<Device>],
        published: &[Arc<Device>],
    ) -> bool {
        devices_equivalent(desired, published)
            || self.stored.get(pool_name).is_some_and(|chunks| {
                chunks.iter().any(|chunk| {
                    devices_equivalent(&chunk.sent, desired)
                        && devices_equivalent(&chunk.stored, published)
                })
            })
    }

    fn slice_spec(
        &self,
        pool_name: &str,
        generation: i64,
        count: i64,
        devices: Vec<Device>,
    ) -> ResourceSliceSpec {
        ResourceSliceSpec {
            driver: self.config.driver_name.clone(),
            node_name: Some(self.config.node_name.clone()),
            pool: ResourcePool {
                name: pool_name.to_string(),
                generation,
                resource_slice_count: count,
            },
            devices: Some(devices),
            ..ResourceSliceSpec::default()
        }
    }

    /// Creates a slice; the slice as stored, on success (also put into the view).
    async fn create_slice(
        &mut self,
        spec: ResourceSliceSpec,
        owner: &OwnerReference,
        outcome: &mut PassOutcome,
    ) -> Option<ViewedSlice> {
        let slice = ResourceSlice {
            metadata: ObjectMeta {
                generate_name: Some(slice_name_prefix(
                    &self.config.node_name,
                    &self.config.driver_name,
                )),
                owner_references: Some(vec![owner.clone()]),
                ..ObjectMeta::default()
            },
            spec,
        };
        match self.slices.create(&PostParams::default(), &slice).await {
            Ok(stored) => {
                outcome.wrote = true;
                Some(self.view.put(stored))
            }
            Err(error) => {
                record(outcome, "creating a ResourceSlice", error);
                None
            }
        }
    }

    /// Replaces a slice's spec and owner; the slice as stored, on success (also put into
    /// the view).
    async fn update_slice(
        &mut self,
        mut slice: ResourceSlice,
        spec: ResourceSliceSpec,
        owner: &OwnerReference,
        outcome: &mut PassOutcome,
    ) -> Option<ViewedSlice> {
        let name = slice.metadata.name.clone().unwrap_or_default();
        slice.spec = spec;
        let refs = slice.metadata.owner_references.get_or_insert_with(Vec::new);
        refs.retain(|r| !(r.kind == "Node" && r.api_version == "v1"));
        refs.push(owner.clone());
        // The viewed resourceVersion stays in the object: if the slice changed since the view
        // saw it, the write is a 409 and changes nothing.
        match self
            .slices
            .replace(&name, &PostParams::default(), &slice)
            .await
        {
            Ok(stored) => {
                outcome.wrote = true;
                Some(self.view.put(stored))
            }
            Err(error) => {
                match &error {
                    // Deleted under us: the retry creates a slice instead.
                    kube::Error::Api(status) if status.code == 404 => self.view.remove(&name),
                    // Changed under us and the watch has not told yet: read it now, so that
                    // the retry writes over the current version instead of failing again.
                    kube::Error::Api(status) if status.code == 409 => self.refresh(&name).await,
                    _ => {}
                }
                record(outcome, &format!("updating ResourceSlice {name}"), error);
                None
            }
        }
    }

    /// Reads one slice into the view (after a conflict); on failure the view stays as it
    /// is and the retry's write is guarded as before.
    async fn refresh(&mut self, name: &str) {
        match self.slices.get(name).await {
            Ok(current) => {
                self.view.put(current);
            }
            Err(kube::Error::Api(status)) if status.code == 404 => self.view.remove(name),
            Err(error) => tracing::debug!(%error, name, "reading a ResourceSlice after a conflict"),
        }
    }

    async fn delete_slice(&mut self, name: &str, outcome: &mut PassOutcome) {
        match self.slices.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                outcome.wrote = true;
                self.view.remove(name);
            }
            // Already gone is what we wanted.
            Err(kube::Error::Api(status)) if status.code == 404 => self.view.remove(name),
            Err(error) => record(outcome, &format!("deleting ResourceSlice {name}"), error),
        }
    }

    /// Deletes this node's slices of this driver, retrying a few times.
    async fn delete_all(&self) {
        let mut backoff = Backoff::default();
        let params = ListParams::default().fields(&self.field_selector());
        for attempt in 1..=SHUTDOWN_DELETE_ATTEMPTS {
            match self
                .slices
                .delete_collection(&DeleteParams::default(), &params)
                .await
            {
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(%error, attempt, "deleting this node's ResourceSlices failed");
                    if !is_retryable(&error) {
                        return;
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// Files an error as retryable or as a rejection, with what was being done.
fn record(outcome: &mut PassOutcome, doing: &str, error: kube::Error) {
    let message = format!("{doing}: {error}");
    if is_retryable(&error) {
        outcome.retryable.push(message);
    } else {
        outcome.rejected.push(message);
    }
}

/// Conflicts, throttling, server errors, not-found (a Node not registered yet, a slice
/// deleted under us) and transport errors pass; other API rejections do not.
fn is_retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            matches!(status.code, 404 | 408 | 409 | 429) || status.code >= 500
        }
        _ => true,
    }
}

/// Device lists equal but for taint times: a taint's `timeAdded` matches when either side
/// has none (the server fills it in) or both are within a second.
fn devices_equivalent<A: Borrow<Device>, B: Borrow<Device>>(a: &[A], b: &[B]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| device_equivalent(a.borrow(), b.borrow()))
}

/// One device of [`devices_equivalent`]. The same allocation, or equal devices, are
/// equivalent without copying anything; only devices that differ are compared again
/// without their taints.
fn device_equivalent(a: &Device, b: &Device) -> bool {
    if std::ptr::eq(a, b) || a == b {
        return true;
    }
    let (a_taints, b_taints) = (
        a.taints.as_deref().unwrap_or_default(),
        b.taints.as_deref().unwrap_or_default(),
    );
    let untainted = |d: &Device| Device {
        taints: None,
        ..d.clone()
    };
    a_taints.len() == b_taints.len()
        && a_taints
            .iter()
            .zip(b_taints)
            .all(|(x, y)| taints_equivalent(x, y))
        && untainted(a) == untainted(b)
}

fn taints_equivalent(a: &DeviceTaint, b: &DeviceTaint) -> bool {
    let times_match = match (&a.time_added, &b.time_added) {
        (Some(x), Some(y)) => {
            (x.0.as_second() - y.0.as_second()).abs() <= TAINT_TIME_TOLERANCE_SECONDS
        }
        _ => true,
    };
    a.key == b.key && a.value == b.value && a.effect == b.effect && times_match
}

/// `timeAdded` of every published taint, by (device name, key, value, effect).
type TaintTimes = BTreeMap<(String, String, Option<String>, String), Time>;

fn published_taint_times(published: &[ViewedSlice]) -> TaintTimes {
    let mut times = TaintTimes::new();
    for device in published.iter().flat_map(|viewed| &viewed.devices) {
        for taint in device.taints.iter().flatten() {
            if let Some(time) = &taint.time_added {
                let key = (
                    device.name.clone(),
                    taint.key.clone(),
                    taint.value.clone(),
                    taint.effect.clone(),
                );
                times.insert(key, time.clone());
            }
        }
    }
    times
}

/// Gives each taint without a `timeAdded` the one its published twin has, so that a
/// rewrite keeps the time the taint really appeared.
fn carry_taint_times(devices: &mut [Device], times: &TaintTimes) {
    for device in devices {
        let name = device.name.clone();
        for taint in device.taints.iter_mut().flatten() {
            if taint.time_added.is_some() {
                continue;
            }
            let key = (
                name.clone(),
                taint.key.clone(),
                taint.value.clone(),
                taint.effect.clone(),
            );
            taint.time_added = times.get(&key).cloned();
        }
    }
}

/// The fields of `sent` (non-empty values) that are missing from `stored`, matched by device
/// name, as `spec.devices[<name>].<path>`.
fn dropped_fields<S: Borrow<Device>, K: Borrow<Device>>(sent: &[S], stored: &[K]) -> Vec<String> {
    let mut dropped = Vec::new();
    for device in sent {
        let device = device.borrow();
        let Some(kept) = stored
            .iter()
            .map(Borrow::borrow)
            .find(|d: &&Device| d.name == device.name)
        else {
            dropped.push(format!("spec.devices[{}]", device.name));
            continue;
        };
        let (Ok(sent_json), Ok(kept_json)) =
            (serde_json::to_value(device), serde_json::to_value(kept))
        else {
            continue;
        };
        missing_paths(
            &sent_json,
            &kept_json,
            &format!("spec.devices[{}]", device.name),
            &mut dropped,
        );
    }
    dropped
}

/// Appends the paths of non-empty values in `sent` that `kept` lacks.
fn missing_paths(
    sent: &serde_json::Value,
    kept: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    let is_empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match (sent, kept) {
        (Value::Object(sent), Value::Object(kept)) => {
            for (key, value) in sent {
                let child = format!("{path}.{key}");
                match kept.get(key) {
                    None if !is_empty(value) => out.push(child),
                    None => {}
                    Some(kept_value) => missing_paths(value, kept_value, &child, out),
                }
            }
        }
        (Value::Array(sent), Value::Array(kept)) => {
            for (index, value) in sent.iter().enumerate() {
                let child = format!("{path}[{index}]");
                match kept.get(index) {
                    None => out.push(child),
                    Some(kept_value) => missing_paths(value, kept_value, &child, out),
                }
            }
        }
        _ => {}
    }
}

/// Splits a pool's devices into slice-sized chunks; an empty pool is one empty slice, so
/// the pool still exists for the scheduler.
fn split_devices(devices: &[Arc<Device>]) -> Vec<&[Arc<Device>]> {
    let constrained = devices.iter().any(|d| {
        d.taints.as_ref().is_some_and(|t| !t.is_empty())
            || d.consumes_counters.as_ref().is_some_and(|c| !c.is_empty())
    });
    let size = if constrained {
        MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS
    } else {
        MAX_DEVICES_PER_SLICE
    };
    if devices.is_empty() {
        return vec![&[]];
    }
    devices.chunks(size).collect()
}

/// `<node>-<driver>-` made a valid DNS-subdomain prefix for `generateName` (the server
/// appends 5 alphanumerics).
pub fn slice_name_prefix(node: &str, driver: &str) -> String {
    let raw = format!("{node}-{driver}-").to_ascii_lowercase();
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let labels: Vec<&str> = mapped.split('.').collect();
    let last = labels.len().saturating_sub(1);
    let mut cleaned: Vec<String> = Vec::new();
    for (index, label) in labels.iter().enumerate() {
        let mut label = label.trim_start_matches('-').to_string();
        if index != last {
            label = label.trim_end_matches('-').to_string();
            label.truncate(63);
            label = label.trim_end_matches('-').to_string();
        } else {
            // The 5-character suffix lands in this label.
            label.truncate(58);
        }
        if !label.is_empty() {
            cleaned.push(label);
        }
    }
    let mut prefix = cleaned.join(".");
    prefix.truncate(248);
    if prefix.is_empty() || !prefix.ends_with('-') && prefix.ends_with('.') {
        prefix.push_str("slice-");
    }
    prefix
}

/// Capped exponential backoff with full jitter.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let ceiling = BACKOFF_INITIAL
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        // Jitter between half and the full ceiling spreads retries of many nodes.
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_dns_subdomains() {
        assert_eq!(
            slice_name_prefix("node-a", "netclaim.dev"),
            "node-a-netclaim.dev-"
        );
        assert_eq!(
            slice_name_prefix("Node_A", "x.example.com"),
            "node-a-x.example.com-"
        );
        assert_eq!(slice_name_prefix("n", "-weird-.dev"), "n--weird.dev-");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        assert!(first <= BACKOFF_INITIAL);
        for _ in 0..40 {
            assert!(backoff.next_delay() <= BACKOFF_MAX);
        }
        assert!(backoff.next_delay() >= BACKOFF_MAX / 2);
    }

    fn tainted(name: &str, time: Option<&str>) -> Device {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "taints": [{ "key": "example.com/k", "value": "v", "effect": "NoSchedule",
                         "timeAdded": time }],
        }))
        .unwrap()
    }

    #[test]
    fn taint_times_are_ignored_when_unset_and_tolerated_within_a_second() {
        let unset = tainted("d", None);
        let at = tainted("d", Some("2026-12-01T10:00:00Z"));
        let a_second_later = tainted("d", Some("2026-12-01T10:00:01Z"));
        let later = tainted("d", Some("2026-12-01T10:00:02Z"));
        assert!(devices_equivalent(
            std::slice::from_ref(&unset),
            std::slice::from_ref(&at)
        ));
        assert!(devices_equivalent(
            std::slice::from_ref(&at),
            std::slice::from_ref(&a_second_later)
        ));
        assert!(!devices_equivalent(
            std::slice::from_ref(&at),
            std::slice::from_ref(&later)
        ));
        let mut other_effect = at.clone();
        other_effect.taints.as_mut().unwrap()[0].effect = "NoExecute".into();
        assert!(!devices_equivalent(
            std::slice::from_ref(&at),
            &[other_effect]
        ));
        let untainted = Device {
            taints: None,
            ..at.clone()
        };
        assert!(!devices_equivalent(&[at], &[untainted]));
    }

    #[test]
    fn dropped_fields_name_what_the_server_left_out() {
        let sent: Device = serde_json::from_value(serde_json::json!({
            "name": "d",
            "allowMultipleAllocations": true,
            "taints": [{ "key": "k", "effect": "NoSchedule" }],
            "capacity": { "x/c": { "value": "4", "requestPolicy": { "default": "1" } } },
        }))
        .unwrap();
        let kept: Device = serde_json::from_value(serde_json::json!({
            "name": "d", "capacity": { "x/c": { "value": "4" } },
        }))
        .unwrap();
        assert_eq!(
            dropped_fields(std::slice::from_ref(&sent), &[kept]),
            [
                "spec.devices[d].allowMultipleAllocations",
                "spec.devices[d].capacity.x/c.requestPolicy",
                "spec.devices[d].taints",
            ]
        );
        // Filled in (timeAdded) is not dropped.
        let mut filled = sent.clone();
        filled.taints = Some(vec![
            tainted("d", Some("2026-12-01T10:00:00Z")).taints.unwrap()[0].clone(),
        ]);
        filled.taints.as_mut().unwrap()[0].key = "k".into();
        filled.taints.as_mut().unwrap()[0].value = None;
        assert_eq!(
            dropped_fields(std::slice::from_ref(&sent), &[filled]),
            Vec::<String>::new()
        );
        assert_eq!(
            dropped_fields(&[sent], &[] as &[Device]),
            ["spec.devices[d]"]
        );
    }

    fn slice(name: &str, resource_version: &str, pool: &str) -> ResourceSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "resourceVersion": resource_version },
            "spec": { "driver": "d", "pool": { "name": pool, "generation": 1,
                                               "resourceSliceCount": 1 } },
        }))
        .unwrap()
    }

    fn versions(view: &SliceView) -> Vec<(String, String)> {
        view.slices
            .values()
            .map(|s| (s.name(), s.slice.resource_version().unwrap_or_default()))
            .collect()
    }

    fn listed(slices: Vec<ResourceSlice>) -> SliceView {
        let mut view = SliceView::default();
        view.apply(watcher::Event::Init);
        for slice in slices {
            view.apply(watcher::Event::InitApply(slice));
        }
        view.apply(watcher::Event::InitDone);
        view
    }

    #[test]
    fn the_view_is_synced_only_from_a_complete_list_and_a_list_replaces_it() {
        let mut view = SliceView::default();
        assert!(!view.is_synced());
        view.apply(watcher::Event::Init);
        view.apply(watcher::Event::InitApply(slice("a", "1", "p")));
        assert!(!view.is_synced());
        // A list that failed half-way starts again from nothing.
        view.apply(watcher::Event::Init);
        view.apply(watcher::Event::InitApply(slice("b", "2", "p")));
        view.apply(watcher::Event::InitDone);
        assert!(view.is_synced());
        assert_eq!(versions(&view), [("b".into(), "2".into())]);

        // A list after a lost watch: not synced until done, then only what it listed.
        view.apply(watcher::Event::Init);
        assert!(!view.is_synced());
        view.apply(watcher::Event::InitApply(slice("c", "5", "q")));
        view.apply(watcher::Event::InitDone);
        assert!(view.is_synced());
        assert_eq!(versions(&view), [("c".into(), "5".into())]);
        assert_eq!(
            view.by_pool().keys().collect::<Vec<_>>(),
            [&"q".to_string()]
        );
    }

    #[test]
    fn the_view_keeps_its_own_writes_over_later_events_for_earlier_versions() {
        let mut view = listed(vec![slice("a", "3", "p")]);
        // The publisher's update answered version 7; the watch then reports 5, then 7, 9.
        let _ = view.put(slice("a", "7", "p"));
        view.apply(watcher::Event::Apply(slice("a", "5", "p")));
        assert_eq!(versions(&view), [("a".into(), "7".into())]);
        view.apply(watcher::Event::Apply(slice("a", "7", "p")));
        view.apply(watcher::Event::Apply(slice("a", "9", "p")));
        assert_eq!(versions(&view), [("a".into(), "9".into())]);

        // A deleted slice stays out until its Delete event, whatever comes before it.
        view.remove("a");
        view.apply(watcher::Event::Apply(slice("a", "9", "p")));
        assert!(view.slices.is_empty());
        view.apply(watcher::Event::Delete(slice("a", "10", "p")));
        assert!(view.deleted.is_empty());
    }

    #[test]
    fn opaque_resource_versions_let_the_watch_win() {
        let mut view = listed(vec![slice("a", "7", "p")]);
        view.apply(watcher::Event::Apply(slice("a", "opaque", "p")));
        assert_eq!(versions(&view), [("a".into(), "opaque".into())]);
        let _ = view.put(slice("a", "5", "p"));
        assert_eq!(versions(&view), [("a".into(), "5".into())]);
    }

    #[test]
    fn the_view_shares_the_desired_devices_it_holds_equal() {
        let with_devices = |name: &str, devices: &[Device]| {
            let mut slice = slice(name, "1", "p");
            slice.spec.devices = Some(devices.to_vec());
            slice
        };
        let plain = Device {
            name: "a".into(),
            ..Device::default()
        };
        let timed = tainted("b", Some("2026-12-01T10:00:00Z"));
        let desired = Pool::new([plain.clone(), tainted("b", None)]);
        let resources = DriverResources {
            pools: [("p".to_owned(), desired.clone())].into(),
        };
        // Listed before the first desired state: the view's own copies, shared once the
        // desired devices are known.
        let mut view = listed(vec![with_devices("s1", &[plain.clone(), timed.clone()])]);
        assert!(!Arc::ptr_eq(
            &view.slices["s1"].devices[0],
            &desired.devices[0]
        ));
        view.set_desired(&resources);
        let held = &view.slices["s1"].devices;
        assert!(Arc::ptr_eq(&held[0], &desired.devices[0]));
        // The server's taint time makes it another value: kept as stored.
        assert!(!Arc::ptr_eq(&held[1], &desired.devices[1]));
        assert_eq!(*held[1], timed);
        // Taken in after: shared at once.
        let viewed = view.put(with_devices("s2", std::slice::from_ref(&plain)));
        assert!(Arc::ptr_eq(&viewed.devices[0], &desired.devices[0]));
        assert!(Arc::ptr_eq(
            &view.slices["s2"].devices[0],
            &desired.devices[0]
        ));
        assert_eq!(view.slices["s2"].slice.spec.devices, None);
    }

    #[test]
    fn splits_at_limits() {
        let device = |n: usize| Device {
            name: format!("d{n}"),
            ..Device::default()
        };
        let devices: Vec<Arc<Device>> = (0..300).map(|n| Arc::new(device(n))).collect();
        let sizes: Vec<usize> = split_devices(&devices).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![128, 128, 44]);
        assert_eq!(split_devices(&[]).len(), 1);
    }
}
