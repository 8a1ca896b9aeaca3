//! What sysfs tells about a network interface: its PCI identity, SR-IOV role, NUMA node,
//! RDMA device and kernel driver.
//!
//! Everything here is outside data: a missing or unreadable file means "not known", never
//! a panic. The root is configurable (`/sys` on a node, a fixture tree in tests, or a sysfs
//! mounted from inside a test netns, since sysfs shows the devices of the netns that
//! mounted it).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use super::scan::LinkRecord;

/// The sysfs facts about one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SysfsNic {
    /// No backing device (`class/net/X/device` absent).
    pub is_virtual: bool,
    /// PCI address of the nearest PCI ancestor of the backing device.
    pub pci_address: Option<String>,
    /// PCI root complex (`pci0000:00`), from the device's real path.
    pub pcie_root: Option<String>,
    /// PCI vendor id, hex digits without `0x`.
    pub vendor_id: Option<String>,
    /// PCI device id, hex digits without `0x`.
    pub device_id: Option<String>,
    /// NUMA node (absent when the kernel says -1).
    pub numa_node: Option<i64>,
    /// `sriov_totalvfs` of a PF.
    pub sriov_total_vfs: Option<i64>,
    /// `sriov_numvfs` of a PF.
    pub sriov_num_vfs: Option<i64>,
    /// PCI subsystem vendor id, hex digits without `0x`.
    pub subsystem_vendor_id: Option<String>,
    /// PCI subsystem device id, hex digits without `0x`.
    pub subsystem_device_id: Option<String>,
    /// For a VF: the PF's PCI address (`physfn`).
    pub pf_pci_address: Option<String>,
    /// For a VF: the PF's interface name (first entry of `physfn/net/`).
    pub pf_name: Option<String>,
    /// For a VF: its index N, from the PF's `virtfnN` link that points back at it.
    pub vf_index: Option<i64>,
    /// RDMA devices under `device/infiniband/`, sorted.
    pub rdma_devices: Vec<String>,
    /// Kernel driver (`device/driver` link name).
    pub kernel_driver: Option<String>,
    /// Link speed in Mb/s when the driver reports a positive one.
    pub speed_mbps: Option<i64>,
}

impl SysfsNic {
    /// Whether this is an SR-IOV virtual function.
    pub fn is_sriov_vf(&self) -> bool {
        self.pf_pci_address.is_some()
    }

    /// Whether this is an SR-IOV physical function.
    pub fn is_sriov_pf(&self) -> bool {
        self.sriov_total_vfs.is_some_and(|n| n > 0)
    }
}

/// Reads the sysfs facts of interface `if_name` under `sysfs_root` (normally `/sys`).
pub fn read_nic(sysfs_root: &Path, if_name: &str) -> SysfsNic {
    read_nic_at(sysfs_root, if_name).0
}

/// [`read_nic`], plus the PCI function directory the facts came from (for re-reading the
/// facts that can change while the interface lives).
fn read_nic_at(sysfs_root: &Path, if_name: &str) -> (SysfsNic, Option<PathBuf>) {
    let net_dir = sysfs_root.join("class/net").join(if_name);
    let device_link = net_dir.join("device");
    let mut nic = SysfsNic {
        speed_mbps: read_int(&net_dir.join("speed")).filter(|s| *s > 0),
        ..SysfsNic::default()
    };
    // `device` is a symlink into /sys/devices; no such link means a software interface.
    let Ok(device_dir) = fs::canonicalize(&device_link) else {
        nic.is_virtual = true;
        return (nic, None);
    };
    nic.kernel_driver = link_target_name(&device_dir.join("driver"));
    nic.rdma_devices = list_dir(&device_dir.join("infiniband"));

    let root = fs::canonicalize(sysfs_root).unwrap_or_else(|_| sysfs_root.to_path_buf());
    let relative = device_dir.strip_prefix(&root).unwrap_or(&device_dir);
    nic.pcie_root = pcie_root_of(relative);
    // The netdev's parent is not always the PCI function itself (virtio-net hangs off a
    // `virtioN` bus device below it), so the PCI facts come from the nearest PCI ancestor.
    if let Some(pci_dir) = nearest_pci_ancestor(&device_dir, &root) {
        nic.pci_address = file_name(&pci_dir);
        nic.vendor_id = read_hex_id(&pci_dir.join("vendor"));
        nic.device_id = read_hex_id(&pci_dir.join("device"));
        nic.numa_node = read_int(&pci_dir.join("numa_node")).filter(|n| *n >= 0);
        nic.sriov_total_vfs = read_int(&pci_dir.join("sriov_totalvfs"));
        nic.sriov_num_vfs = read_int(&pci_dir.join("sriov_numvfs"));
        nic.subsystem_vendor_id = read_hex_id(&pci_dir.join("subsystem_vendor"));
        nic.subsystem_device_id = read_hex_id(&pci_dir.join("subsystem_device"));
        nic.pf_pci_address = link_target_name(&pci_dir.join("physfn"));
        if let (Some(own), Some(_)) = (&nic.pci_address, &nic.pf_pci_address) {
            let pf_dir = pci_dir.join("physfn");
            nic.pf_name = list_dir(&pf_dir.join("net")).into_iter().next();
            nic.vf_index = vf_index_of(&pf_dir, own);
        }
        return (nic, Some(pci_dir));
    }
    (nic, None)
}

/// Interfaces with more cache misses than this in one pass are read on several threads.
const PARALLEL_MISSES: usize = 64;

/// Sysfs facts kept across discovery passes, per ifindex.
///
/// The PCI identity, NUMA node, driver and SR-IOV role of a netdev do not change while its
/// ifindex lives, so a pass reads sysfs only for:
/// - new ifindexes (and all interfaces after any rename: a VF records its PF's name);
/// - the link speed of an interface whose carrier or operational state changed: a speed
///   is kept until the link reports another one, so a link going down (speed unknown,
///   -1) does not remove the attribute and a flapping link does not rewrite the slice;
/// - `sriov_numvfs` of every SR-IOV PF (one small file each).
///
/// What can still go stale (an RDMA device registered after the netdev) is corrected by
/// [`SysfsCache::clear`], which the watcher calls on every periodic resync.
#[derive(Debug, Default)]
pub struct SysfsCache {
    entries: HashMap<u32, CachedNic>,
}

#[derive(Debug)]
struct CachedNic {
    name: String,
    carrier: Option<bool>,
    oper_state: String,
    pci_dir: Option<PathBuf>,
    nic: SysfsNic,
}

impl SysfsCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of interfaces cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets everything: the next pass reads sysfs for every interface.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The sysfs facts of each of `links`, in order, reading sysfs only where the cache
    /// cannot answer; entries of ifindexes not in `links` are dropped.
    pub fn read_all(&mut self, sysfs_root: &Path, links: &[&LinkRecord]) -> Vec<SysfsNic> {
        let renamed = links.iter().any(|link| {
            self.entries
                .get(&link.index)
                .is_some_and(|cached| cached.name != link.name)
        });
        if renamed {
            self.entries.clear();
        }
        let live: HashSet<u32> = links.iter().map(|l| l.index).collect();
        self.entries.retain(|index, _| live.contains(index));

        let misses: Vec<&LinkRecord> = links
            .iter()
            .copied()
            .filter(|link| !self.entries.contains_key(&link.index))
            .collect();
        for (link, (nic, pci_dir)) in misses.iter().zip(read_many(sysfs_root, &misses)) {
            self.entries.insert(
                link.index,
                CachedNic {
                    name: link.name.clone(),
                    carrier: link.carrier,
                    oper_state: link.oper_state.clone(),
                    pci_dir,
                    nic,
                },
            );
        }

        links
            .iter()
            .map(|link| match self.entries.get_mut(&link.index) {
                Some(cached) => {
                    cached.refresh(sysfs_root, link);
                    cached.nic.clone()
                }
                // Inserted above for every miss; reading again is only a fallback.
                None => read_nic(sysfs_root, &link.name),
            })
            .collect()
    }
}

impl CachedNic {
    /// Re-reads the facts that can change while the interface lives.
    fn refresh(&mut self, sysfs_root: &Path, link: &LinkRecord) {
        if self.carrier != link.carrier || self.oper_state != link.oper_state {
            let speed = sysfs_root.join("class/net").join(&link.name).join("speed");
            // A link without carrier reports no speed; the last known one stands.
            if let Some(speed) = read_int(&speed).filter(|s| *s > 0) {
                self.nic.speed_mbps = Some(speed);
            }
            self.carrier = link.carrier;
            self.oper_state.clone_from(&link.oper_state);
        }
        if self.nic.is_sriov_pf()
            && let Some(pci_dir) = &self.pci_dir
        {
            self.nic.sriov_num_vfs = read_int(&pci_dir.join("sriov_numvfs"));
        }
    }
}

/// Reads the facts of `links`, on up to 4 threads when there are many.
fn read_many(sysfs_root: &Path, links: &[&LinkRecord]) -> Vec<(SysfsNic, Option<PathBuf>)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if links.len() <= PARALLEL_MISSES || threads < 2 {
        return links
            .iter()
            .map(|link| read_nic_at(sysfs_root, &link.name))
            .collect();
    }
    let chunk = links.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = links
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|link| read_nic_at(sysfs_root, &link.name))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut read = Vec::with_capacity(links.len());
        for (worker, part) in workers.into_iter().zip(links.chunks(chunk)) {
            match worker.join() {
                Ok(nics) => read.extend(nics),
                // A reader thread cannot panic on outside data; if it did anyway, read
                // its share again here.
                Err(_) => read.extend(part.iter().map(|l| read_nic_at(sysfs_root, &l.name))),
            }
        }
        read
    })
}

/// The N of the PF's `virtfnN` link whose target is the VF `vf_pci_address`.
fn vf_index_of(pf_dir: &Path, vf_pci_address: &str) -> Option<i64> {
    list_dir(pf_dir).iter().find_map(|entry| {
        let index = entry.strip_prefix("virtfn")?.parse().ok()?;
        let target = link_target_name(&pf_dir.join(entry))?;
        (target == vf_pci_address).then_some(index)
    })
}

/// Whether a path component looks like a PCI address, `dddd:bb:dd.f` in hex.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// The `pciDDDD:BB` component right below `devices/`, if the device sits on a PCI bus.
fn pcie_root_of(relative_device_path: &Path) -> Option<String> {
    let mut components = relative_device_path.components().filter_map(|c| match c {
        Component::Normal(s) => s.to_str(),
        _ => None,
    });
    components.find(|c| *c == "devices")?;
    let root = components.next()?;
    root.starts_with("pci").then(|| root.to_owned())
}

/// Walks up from `device_dir` (staying inside `root`) to the first PCI function directory.
fn nearest_pci_ancestor(device_dir: &Path, root: &Path) -> Option<PathBuf> {
    device_dir
        .ancestors()
        .take_while(|dir| dir.starts_with(root) && *dir != root)
        .find(|dir| {
            dir.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_pci_address)
        })
        .map(Path::to_path_buf)
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_owned)
}

/// The last component of a symlink's target (`driver -> .../drivers/mlx5_core`).
fn link_target_name(link: &Path) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    file_name(&target)
}

fn list_dir(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn read_int(path: &Path) -> Option<i64> {
    read_trimmed(path)?.parse().ok()
}

/// `0x15b3` -> `15b3`; anything that is not hex is dropped.
fn read_hex_id(path: &Path) -> Option<String> {
    let text = read_trimmed(path)?;
    let digits = text
        .strip_prefix("0x")
        .unwrap_or(&text)
        .to_ascii_lowercase();
    (!digits.is_empty() && digits.len() <= 8 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:03:00.1"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("virtio0"));
    }

    #[test]
    fn pcie_root_from_path() {
        let p = Path::new("devices/pci0000:00/0000:00:03.0/virtio0");
        assert_eq!(pcie_root_of(p).as_deref(), Some("pci0000:00"));
        assert_eq!(pcie_root_of(Path::new("devices/virtual/net/veth0")), None);
    }

    fn link(index: u32, name: &str, carrier: bool) -> LinkRecord {
        LinkRecord {
            index,
            name: name.to_owned(),
            carrier: Some(carrier),
            ..LinkRecord::default()
        }
    }

    #[test]
    fn cache_rereads_only_what_changed() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let net = root.path().join("class/net");
        for (name, speed) in [("eth0", "1000"), ("eth1", "10"), ("eth2", "100")] {
            fs::create_dir_all(net.join(name))?;
            fs::write(net.join(name).join("speed"), speed)?;
        }
        let mut cache = SysfsCache::new();
        let speeds = |nics: Vec<SysfsNic>| nics.iter().map(|n| n.speed_mbps).collect::<Vec<_>>();
        let (a, b) = (link(2, "eth0", true), link(3, "eth2", true));
        assert_eq!(
            speeds(cache.read_all(root.path(), &[&a, &b])),
            [Some(1000), Some(100)]
        );
        // Same link state: the cached speed stands.
        fs::write(net.join("eth0/speed"), "25000")?;
        assert_eq!(
            speeds(cache.read_all(root.path(), &[&a, &b])),
            [Some(1000), Some(100)]
        );
        // Carrier changed: the speed is read again.
        let a = link(2, "eth0", false);
        assert_eq!(
            speeds(cache.read_all(root.path(), &[&a, &b])),
            [Some(25000), Some(100)]
        );
        // Carrier lost: the link reports no speed (-1); the last known one stands, so a
        // flapping link does not change the published attributes.
        fs::write(net.join("eth0/speed"), "-1")?;
        let a = link(2, "eth0", true);
        let down = link(2, "eth0", false);
        assert_eq!(speeds(cache.read_all(root.path(), &[&a])), [Some(25000)]);
        assert_eq!(speeds(cache.read_all(root.path(), &[&down])), [Some(25000)]);
        // A rename reads everything again; a link that left is forgotten.
        let renamed = link(2, "eth1", false);
        assert_eq!(speeds(cache.read_all(root.path(), &[&renamed])), [Some(10)]);
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
        Ok(())
    }

    #[test]
    fn missing_interface_is_virtual() {
        let nic = read_nic(Path::new("/nonexistent-sysfs"), "eth9");
        assert!(nic.is_virtual);
        assert_eq!(nic.pci_address, None);
    }
}
