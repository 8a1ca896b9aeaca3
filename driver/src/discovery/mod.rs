//! NIC discovery: finds this node's network interfaces with rtnetlink and sysfs, leaves out
//! the ones the node needs (loopback, default-route uplinks and what they depend on) and
//! the ones the admin's CEL filter rejects, and turns the rest into `resource.k8s.io/v1`
//! [`Device`]s, one per NIC.
//!
//! - [`Discovery`] owns the netlink socket and builds the device list on demand
//!   ([`Discovery::refresh`]) or keeps it current ([`Discovery::watch`]: netlink events,
//!   debounced, plus a periodic resync).
//! - [`Inventory`] is the shared view of what is published: the prepare and attach code
//!   look devices up with [`Inventory::host_device`] and pin a device moved into a pod with
//!   [`Inventory::hold`] until [`Inventory::release`].
//! - Each pass also reports the link state behind every published device
//!   ([`LinkStates`]): device health and taints are derived from it (`crate::health`), the
//!   attributes carry no link state.
//!
//! # Guarantees
//! - Device names are DNS labels, derived from the PCI address when there is one (stable
//!   across renames and restarts), otherwise from the interface name.
//! - Every published device satisfies the API's limits (see [`attributes`]).
//! - The published list is sorted by device name and has no duplicate names.
//! - Shared parent NICs (published devices the `--shared-filter` selects, see
//!   [`SharedNics`]) have `allowMultipleAllocations: true`, the `shared` attribute and the
//!   `netclaim.dev/children` capacity; [`HostNic::shared_children`] tells prepare so.

pub mod attributes;
pub mod exclude;
pub mod filter;
pub mod names;
pub mod scan;
pub mod slices;
pub mod sysfs;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::resource::v1::Device;
use tokio::sync::Notify;

pub use attributes::NicRecord;
pub use exclude::Exclusion;
pub use filter::{DeviceFilter, Rejection};
pub use scan::{EventStream, LinkRecord, LinkSnapshot, RouteSocket};
pub use sysfs::{SysfsCache, SysfsNic};
pub use watch::WatchHandle;

/// How discovery finds and describes devices.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// The DRA driver name (the attribute domain of short attribute names).
    pub driver_name: String,
    /// Where sysfs is mounted (`/sys`; a fixture tree or a netns's sysfs in tests).
    pub sysfs_root: PathBuf,
    /// The admin's filter; `None` publishes every eligible NIC.
    pub filter: Option<Arc<DeviceFilter>>,
    /// With a name, the Multus interop attributes are published.
    pub multus_resource_name: Option<String>,
    /// Which published NICs are shared parents, and how many children each may have;
    /// `None`: no NIC is shared.
    pub shared: Option<SharedNics>,
    /// Publish virtual devices too (veth, macvlan, vxlan, tunnels: anything without a
    /// device under `/sys/devices` other than `virtual`). Off by default: on a node those
    /// are other pods' host-side veths (`cali*`, `lxc*`), overlays (`flannel.1`) and
    /// tunnels (`tunl0`), and a claim must never take one (`--include-virtual`).
    pub include_virtual: bool,
    /// Quiet time that ends a burst of netlink events before the devices are rebuilt.
    pub debounce: Duration,
    /// Full rebuild interval when no events arrive (a safety net for lost events).
    pub resync: Duration,
    /// The PodNetworks this node serves: a device exactly one Ready network selects gets
    /// the `podNetwork` attribute ([`crate::podnetwork`]). `None`: no attribute.
    pub pod_networks: Option<crate::podnetwork::PodNetworks>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            driver_name: names::DRIVER_DOMAIN.to_owned(),
            sysfs_root: PathBuf::from("/sys"),
            filter: None,
            multus_resource_name: None,
            shared: None,
            include_virtual: false,
            debounce: Duration::from_millis(15),
            resync: Duration::from_secs(300),
            pod_networks: None,
        }
    }
}

/// Shared parent NICs: the published devices `filter` selects are offered to many claims
/// at once (DRA consumable capacity), each allocation a CNI child (macvlan, ipvlan) of the
/// NIC, at most `children` at a time.
#[derive(Clone, Debug)]
pub struct SharedNics {
    /// Selects the shared parents among the published devices (`--shared-filter`; same
    /// `device` variable as `--filter`, evaluated on the device as it would be published
    /// unshared). A device on which it fails is published unshared.
    pub filter: Arc<DeviceFilter>,
    /// How many children each shared parent may have (`--shared-children`), at least 1.
    pub children: u32,
}

/// A published device's current host interface, for the prepare and attach code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNic {
    /// The device name in the ResourceSlice.
    pub device_name: String,
    /// Current interface name on the host.
    pub if_name: String,
    /// Current ifindex on the host.
    pub if_index: u32,
    /// Link kind (`veth`, `macvlan`, ...), `None` for a NIC without one.
    pub kind: Option<String>,
    /// PCI address, when the NIC has one.
    pub pci_address: Option<String>,
    /// Current MAC address.
    pub mac: Option<String>,
    /// For a shared parent NIC: how many CNI children it may have at once (its published
    /// `netclaim.dev/children` capacity). `None`: the device is allocated to one claim.
    pub shared_children: Option<u32>,
}

impl HostNic {
    fn of(device_name: &str, nic: &NicRecord, published: Option<&Device>) -> Self {
        Self {
            device_name: device_name.to_owned(),
            if_name: nic.link.name.clone(),
            if_index: nic.link.index,
            kind: nic.link.kind.clone(),
            pci_address: nic.sysfs.pci_address.clone(),
            mac: nic.link.mac.clone(),
            shared_children: published.and_then(shared_children),
        }
    }
}

/// The number of children of a device published as a shared parent, else `None`.
pub fn shared_children(device: &Device) -> Option<u32> {
    if device.allow_multiple_allocations != Some(true) {
        return None;
    }
    let capacity = device.capacity.as_ref()?.get(names::CHILDREN)?;
    capacity.value.0.parse().ok()
}

/// What one discovery pass found, including what it left out and why.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The devices to publish, sorted by name (held devices included). Shared with the
    /// [`Inventory`]; after [`Inventory::publish`], a device equal to the one the previous
    /// pass published is that same allocation (see [`same_devices`]).
    pub devices: Vec<Arc<Device>>,
    /// The NIC behind each published device found on the host (held devices that left the
    /// host have none).
    pub nics: BTreeMap<String, NicRecord>,
    /// Interfaces left out, with the reason.
    pub skipped: Vec<(String, String)>,
    /// The link behind each published device (filled in by [`Inventory::publish`]).
    pub links: LinkStates,
}

/// The link behind a published device, as the host sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceLink {
    /// The interface is in the node's namespace.
    Host(LinkState),
    /// The device is held for a pod ([`Inventory::hold`]) and its interface is not in the
    /// node's namespace: it is in the pod, where the node's netlink socket cannot see it.
    InPod,
}

/// An interface's link state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    /// The interface name.
    pub if_name: String,
    /// Administratively up (IFF_UP).
    pub admin_up: bool,
    /// RFC 2863 operational state as `ip link` prints it (`up`, `down`,
    /// `lowerlayerdown`, `dormant`, `unknown`, ...).
    pub oper_state: String,
    /// IFLA_CARRIER, when reported.
    pub carrier: Option<bool>,
}

impl LinkState {
    /// The state of `link`.
    pub fn of(link: &LinkRecord) -> Self {
        Self {
            if_name: link.name.clone(),
            admin_up: link.up,
            oper_state: link.oper_state.clone(),
            carrier: link.carrier,
        }
    }
}

/// The link behind each published device, by device name.
pub type LinkStates = BTreeMap<String, DeviceLink>;

/// The candidate NICs of `snapshot` (excluded ones removed) with their sysfs facts, and
/// the excluded interfaces with the reason.
///
/// Reads sysfs for every candidate (several at a time when there are many); see
/// [`candidate_nics_cached`] for a pass that reuses what an earlier pass read.
pub fn candidate_nics(
    snapshot: &LinkSnapshot,
    sysfs_root: &Path,
) -> (Vec<NicRecord>, Vec<(String, String)>) {
    candidate_nics_cached(snapshot, sysfs_root, &mut SysfsCache::new())
}

/// [`candidate_nics`], reading sysfs only where `cache` cannot answer.
pub fn candidate_nics_cached(
    snapshot: &LinkSnapshot,
    sysfs_root: &Path,
    cache: &mut SysfsCache,
) -> (Vec<NicRecord>, Vec<(String, String)>) {
    let excluded = exclude::excluded(snapshot);
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    for link in snapshot.links.values() {
        match excluded.get(&link.index) {
            Some(why) => skipped.push((link.name.clone(), why.to_string())),
            None => candidates.push(link),
        }
    }
    let facts = cache.read_all(sysfs_root, &candidates);
    let nics = candidates
        .into_iter()
        .zip(facts)
        .map(|(link, sysfs)| NicRecord {
            sysfs,
            link: link.clone(),
        })
        .collect();
    (nics, skipped)
}

/// Builds the devices of `nics`, applies the filter and drops duplicate names; returns
/// the report (without held devices, which [`Inventory::publish`] adds).
pub fn build_report(
    config: &DiscoveryConfig,
    nics: Vec<NicRecord>,
    mut skipped: Vec<(String, String)>,
) -> Report {
    let mut devices = BTreeMap::new();
    let mut by_name = BTreeMap::new();
    let shared_pci = shared_pci_addresses(&nics);
    for nic in nics {
        if nic.sysfs.is_virtual && !config.include_virtual {
            skipped.push((
                nic.link.name.clone(),
                "virtual device (other pods' veths, overlays and tunnels are never offered; \
                 --include-virtual publishes virtual devices)"
                    .to_owned(),
            ));
            continue;
        }
        let mut device =
            attributes::build_device(&nic, config.multus_resource_name.as_deref(), None);
        // Several netdevs on one PCI function (multi-port functions, switchdev
        // representors) cannot all be named after it: they are named after their
        // interfaces instead, whatever order the kernel lists them in.
        if nic
            .sysfs
            .pci_address
            .as_ref()
            .is_some_and(|p| shared_pci.contains(p))
        {
            device.name = names::device_name_for(&nic.link.name, None);
        }
        if let Err(why) = passes_filter(config, &device) {
            if matches!(why, Rejection::Error(_) | Rejection::NotBool(_)) {
                tracing::warn!(interface = %nic.link.name, device = %device.name, reason = %why, "device excluded by the filter");
            }
            skipped.push((nic.link.name.clone(), why.to_string()));
            continue;
        }
        if let Some(children) = shared_parent(config, &device, &nic.link.name) {
            let name = device.name;
            device = attributes::build_device(
                &nic,
                config.multus_resource_name.as_deref(),
                Some(children),
            );
            device.name = name;
        }
        if let Some(networks) = &config.pod_networks {
            networks.current().label(&config.driver_name, &mut device);
        }
        if let Some(first) = by_name.get(&device.name) {
            let first: &NicRecord = first;
            let why = format!(
                "device name {} already used by {}",
                device.name, first.link.name
            );
            tracing::warn!(interface = %nic.link.name, "{why}");
            skipped.push((nic.link.name.clone(), why));
            continue;
        }
        by_name.insert(device.name.clone(), nic);
        devices.insert(device.name.clone(), device);
    }
    Report {
        devices: devices.into_values().map(Arc::new).collect(),
        nics: by_name,
        skipped,
        links: LinkStates::new(),
    }
}

fn passes_filter(config: &DiscoveryConfig, device: &Device) -> Result<(), Rejection> {
    match &config.filter {
        Some(filter) => filter.check(&config.driver_name, device),
        None => Ok(()),
    }
}

/// The children of `device` when the shared filter selects it. A filter error leaves the
/// device unshared (logged): sharing is an opt-in, so failing closed keeps it exclusive.
fn shared_parent(config: &DiscoveryConfig, device: &Device, if_name: &str) -> Option<u32> {
    let shared = config.shared.as_ref()?;
    match shared.filter.check(&config.driver_name, device) {
        Ok(()) => Some(shared.children),
        Err(Rejection::False) => None,
        Err(why) => {
            tracing::warn!(interface = %if_name, device = %device.name, reason = %why, "--shared-filter failed; the device is published unshared");
            None
        }
    }
}

fn shared_pci_addresses(nics: &[NicRecord]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut shared = BTreeSet::new();
    for pci in nics.iter().filter_map(|n| n.sysfs.pci_address.as_ref()) {
        if !seen.insert(pci) {
            shared.insert(pci.clone());
        }
    }
    shared
}

/// Whether two device lists are equal, comparing by pointer first: lists from passes that
/// found the same devices share their allocations ([`Inventory::publish`]), so this is
/// cheap when nothing changed.
pub fn same_devices(a: &[Arc<Device>], b: &[Arc<Device>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
}

/// The shared view of what discovery publishes. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    state: Arc<Mutex<InventoryState>>,
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct InventoryState {
    /// The one copy of the published devices: the watcher's channel, the health monitor
    /// and the publisher share these allocations.
    published: BTreeMap<String, Arc<Device>>,
    host: BTreeMap<String, HostNic>,
    /// Held device names, with the device as last published before the hold (if it was).
    held: BTreeMap<String, Option<Arc<Device>>>,
}

impl Inventory {
    /// The current host interface behind a published device name.
    pub fn host_device(&self, device_name: &str) -> Option<HostNic> {
        self.lock().host.get(device_name).cloned()
    }

    /// The devices last published, sorted by name.
    pub fn devices(&self) -> Vec<Arc<Device>> {
        self.lock().published.values().cloned().collect()
    }

    /// The device published under `device_name`, if it is (a copy).
    pub fn published_device(&self, device_name: &str) -> Option<Device> {
        self.lock()
            .published
            .get(device_name)
            .map(|device| Device::clone(device))
    }

    /// Marks `device_name` as in use by a pod: it stays published with its current
    /// attributes (or, when it is not published now, as `recorded` says: the device as
    /// prepare saw it, after a restart) even when its interface leaves the host, until
    /// [`Inventory::release`]. Wakes a running watcher when that changes what is published.
    pub fn hold(&self, device_name: &str, recorded: Option<Device>) {
        let mut state = self.lock();
        let last = state
            .published
            .get(device_name)
            .cloned()
            .or_else(|| recorded.map(Arc::new));
        let newly_published = last.is_some() && !state.published.contains_key(device_name);
        state.held.entry(device_name.to_owned()).or_insert(last);
        drop(state);
        if newly_published {
            self.changed.notify_one();
        }
    }

    /// Ends a [`Inventory::hold`]; the next pass publishes the device as the host sees it
    /// (or not at all if it is gone). Wakes a running watcher.
    pub fn release(&self, device_name: &str) {
        let released = self.lock().held.remove(device_name).is_some();
        if released {
            self.changed.notify_one();
        }
    }

    /// The held device names.
    pub fn held(&self) -> BTreeSet<String> {
        self.lock().held.keys().cloned().collect()
    }

    /// Records a pass: held devices keep their last published attributes; leaves the
    /// device list to publish in `report.devices`. A device equal to the one published
    /// before under its name keeps that allocation (the new one is dropped), so an
    /// unchanged device stays one copy and readers can compare it by pointer.
    pub fn publish(&self, report: &mut Report) {
        let mut state = self.lock();
        let mut previous = std::mem::take(&mut state.published);
        let mut published: BTreeMap<String, Arc<Device>> = report
            .devices
            .drain(..)
            .map(|device| {
                let device = match previous.remove(&device.name) {
                    Some(old) if old == device => old,
                    _ => device,
                };
                (device.name.clone(), device)
            })
            .collect();
        drop(previous);
        for (name, last) in &state.held {
            if let Some(device) = last {
                published.insert(name.clone(), device.clone());
            }
        }
        state.host = report
            .nics
            .iter()
            .map(|(name, nic)| {
                (
                    name.clone(),
                    HostNic::of(name, nic, published.get(name).map(|d| &**d)),
                )
            })
            .collect();
        report.links = published
            .keys()
            .map(|name| {
                let link = match report.nics.get(name) {
                    Some(nic) => DeviceLink::Host(LinkState::of(&nic.link)),
                    None => DeviceLink::InPod,
                };
                (name.clone(), link)
            })
            .collect();
        state.published = published;
        report.devices = state.published.values().cloned().collect();
    }

    /// Makes a running watcher rebuild and republish the devices now (the PodNetworks
    /// changed, see [`crate::podnetwork::agent`]).
    pub fn republish(&self) {
        self.changed.notify_one();
    }

    /// Resolves when [`Inventory::release`] changed what should be published.
    async fn released(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, InventoryState> {
        // A panic while holding the lock cannot leave the maps half-written in a way that
        // matters (each pass replaces them whole), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Discovery over one netns: the netlink socket, the configuration and the inventory.
pub struct Discovery {
    config: DiscoveryConfig,
    socket: RouteSocket,
    events: EventStream,
    inventory: Inventory,
    /// Sysfs facts from earlier passes (see [`SysfsCache`]).
    sysfs_cache: Arc<Mutex<SysfsCache>>,
}

impl Discovery {
    /// Opens discovery in the calling thread's netns (the node's, for the daemon).
    pub fn open(config: DiscoveryConfig) -> Result<Self> {
        let (socket, events) = RouteSocket::open_watching()?;
        Ok(Self::with_socket(config, socket, events))
    }

    /// Opens discovery in the netns at `netns_path` (tests build "nodes" in their own
    /// netns). `config.sysfs_root` must show that netns's devices.
    pub fn open_in_netns(config: DiscoveryConfig, netns_path: &Path) -> Result<Self> {
        let (socket, events) = RouteSocket::open_watching_in(netns_path)?;
        Ok(Self::with_socket(config, socket, events))
    }

    fn with_socket(config: DiscoveryConfig, socket: RouteSocket, events: EventStream) -> Self {
        Self {
            config,
            socket,
            events,
            inventory: Inventory::default(),
            sysfs_cache: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// The shared inventory this discovery updates.
    pub fn inventory(&self) -> Inventory {
        self.inventory.clone()
    }

    /// One full pass: dump netlink, read sysfs (only what the [`SysfsCache`] of earlier
    /// passes cannot answer), build, filter, record in the inventory.
    ///
    /// The sysfs reads and the build (attributes, CEL filter) run on a blocking thread: the
    /// async runtime's workers also answer the runtime's NRI hooks, which must not wait on
    /// a slow sysfs or a long pass over many NICs.
    pub async fn report(&self) -> Result<Report> {
        let snapshot = self.socket.snapshot().await?;
        let cache = self.sysfs_cache.clone();
        let config = self.config.clone();
        let mut report = tokio::task::spawn_blocking(move || {
            let (nics, skipped) = {
                let mut cache = lock_cache(&cache);
                candidate_nics_cached(&snapshot, &config.sysfs_root, &mut cache)
            };
            build_report(&config, nics, skipped)
        })
        .await
        .map_err(|error| anyhow::anyhow!("the discovery pass failed: {error}"))?;
        self.inventory.publish(&mut report);
        Ok(report)
    }

    /// One full pass; the devices to publish.
    pub async fn refresh(&self) -> Result<Vec<Arc<Device>>> {
        Ok(self.report().await?.devices)
    }

    /// Forgets the sysfs facts of earlier passes: the next pass reads sysfs for every
    /// interface (the watcher does this on each periodic resync).
    pub fn forget_sysfs(&self) {
        lock_cache(&self.sysfs_cache).clear();
    }
}

fn lock_cache(cache: &Mutex<SysfsCache>) -> MutexGuard<'_, SysfsCache> {
    // The cache is only a shortcut: after a panic mid-update, start from scratch.
    cache.lock().unwrap_or_else(|poisoned| {
        let mut cache = poisoned.into_inner();
        cache.clear();
        cache
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(devices: &[(&str, i64)]) -> Report {
        let devices = devices
            .iter()
            .map(|(name, mtu)| {
                serde_json::from_value(serde_json::json!({
                    "name": name, "attributes": { "mtu": { "int": mtu } },
                }))
                .map(Arc::new)
            })
            .collect::<Result<_, _>>();
        Report {
            devices: devices.unwrap_or_default(),
            ..Report::default()
        }
    }

    #[test]
    fn unchanged_devices_keep_their_allocation_across_passes() {
        let inventory = Inventory::default();
        let mut first = report(&[("a", 1500), ("b", 1500)]);
        inventory.publish(&mut first);
        let mut second = report(&[("a", 1500), ("b", 9000)]);
        inventory.publish(&mut second);
        assert_eq!(second.devices.len(), 2);
        assert!(Arc::ptr_eq(&first.devices[0], &second.devices[0]));
        assert!(!Arc::ptr_eq(&first.devices[1], &second.devices[1]));
        assert!(!same_devices(&first.devices, &second.devices));
        let mut third = report(&[("a", 1500), ("b", 9000)]);
        inventory.publish(&mut third);
        assert!(
            second
                .devices
                .iter()
                .zip(&third.devices)
                .all(|(x, y)| Arc::ptr_eq(x, y))
        );
        assert!(same_devices(&second.devices, &third.devices));
        // The inventory holds the same allocations, not a copy.
        assert!(Arc::ptr_eq(&inventory.devices()[1], &third.devices[1]));
    }
}
