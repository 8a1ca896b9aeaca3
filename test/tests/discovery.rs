//! Discovery end to end: a fake node in its own netns (veth, macvlan, bridge with ports,
//! vxlan, a bridge uplink with an IPv4 default route and a macvlan uplink with an IPv6
//! default route), read through real netlink and a sysfs mounted from inside that netns;
//! sysfs fixture trees for hardware this machine lacks; bad input.
//!
//! In-process discovery opens its netlink socket inside the test netns
//! (`Discovery::open_in_netns`) and reads the sysfs that `TestNetns::mount_sysfs` mounted
//! from inside it. One test also runs the built `netclaim devices -o json` binary under
//! `ip netns exec`; it expects `target/<profile>/netclaim` next to this test's own
//! executable (`cargo build -p netclaim` first) and fails with that hint when it is missing.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::ResourceSlice;
use k8s_openapi::api::resource::v1::{Device, DeviceAttribute};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kubeletplugin::{PublisherConfig, ResourceSlicePublisher};
use netclaim::daemon::driver_resources;
use netclaim::discovery::attributes::{self, ATTRIBUTE_PRIORITY, NicRecord};
use netclaim::discovery::names;
use netclaim::discovery::{
    DeviceFilter, DeviceLink, Discovery, DiscoveryConfig, LinkRecord, Report, build_report, sysfs,
};
use netclaim_test::apiserver::{ApiServer, ApiServerOptions};
use netclaim_test::netns::{NetnsSysfs, TestNetns};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

/// Bound for every wait on the watcher: generous for a loaded 2-core machine, yet a broken
/// watcher fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(15);

/// A fake node: its netns and a sysfs showing that netns's devices.
struct FakeNode {
    sysfs: NetnsSysfs,
    netns: TestNetns,
}

impl FakeNode {
    /// An empty node (loopback only).
    fn empty(prefix: &str) -> Result<Self> {
        let netns = TestNetns::new(prefix)?;
        let sysfs = netns.mount_sysfs()?;
        Ok(Self { sysfs, netns })
    }

    /// The node described in the module docs.
    fn populated(prefix: &str) -> Result<Self> {
        let node = Self::empty(prefix)?;
        let ip = |args: &[&str]| node.netns.ip(args).map(drop);
        node.netns.add_veth("veth0", "veth1")?;
        // The IPv4 uplink: a bridge with one port, carrying the default route.
        ip(&["link", "add", "br0", "type", "bridge"])?;
        node.netns.add_veth("port0", "port0p")?;
        ip(&["link", "set", "port0", "master", "br0"])?;
        ip(&["addr", "add", "192.0.2.1/24", "dev", "br0"])?;
        ip(&["link", "set", "br0", "up"])?;
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "192.0.2.254",
            "dev",
            "br0",
        ])?;
        // The IPv6 uplink: a macvlan whose lower device must stay too.
        node.netns.add_veth("lower0", "lower0p")?;
        ip(&[
            "link", "add", "mvup", "link", "lower0", "type", "macvlan", "mode", "bridge",
        ])?;
        for dev in ["lower0", "lower0p", "mvup"] {
            ip(&["link", "set", dev, "up"])?;
        }
        ip(&["-6", "route", "add", "default", "dev", "mvup"])?;
        // Offerable interfaces of other kinds.
        ip(&[
            "link", "add", "mv0", "link", "veth0", "type", "macvlan", "mode", "bridge",
        ])?;
        ip(&[
            "link", "add", "vx0", "type", "vxlan", "id", "42", "dev", "veth1", "dstport", "4789",
        ])?;
        ip(&["link", "add", "br1", "type", "bridge"])?;
        node.netns.add_veth("port1", "port1p")?;
        ip(&["link", "set", "port1", "master", "br1"])?;
        ip(&["addr", "add", "198.51.100.10/24", "dev", "veth0"])?;
        ip(&["addr", "add", "2001:db8::10/64", "dev", "veth0", "nodad"])?;
        Ok(node)
    }

    fn config(&self) -> DiscoveryConfig {
        DiscoveryConfig {
            sysfs_root: self.sysfs.path().to_path_buf(),
            // The fake node's NICs are veths (the real binary's default leaves them out:
            // see the_default_leaves_every_virtual_device_out).
            include_virtual: true,
            ..DiscoveryConfig::default()
        }
    }

    fn discovery(&self, config: DiscoveryConfig) -> Result<Discovery> {
        Discovery::open_in_netns(config, &self.netns.path())
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        self.netns.ip(args).map(drop)
    }
}

/// The published interfaces of the populated node.
const OFFERED: &[&str] = &[
    "lower0p", "mv0", "port0p", "port1p", "veth0", "veth1", "vx0",
];

fn attr<'a>(device: &'a Device, name: &str) -> Option<&'a DeviceAttribute> {
    device.attributes.as_ref()?.get(name)
}

fn string_attr(device: &Device, name: &str) -> Option<String> {
    attr(device, name)?.string.clone()
}

fn if_names<D: std::borrow::Borrow<Device>>(devices: &[D]) -> BTreeSet<String> {
    devices
        .iter()
        .filter_map(|d| string_attr(std::borrow::Borrow::borrow(d), names::IF_NAME))
        .collect()
}

fn by_if_name<D: std::borrow::Borrow<Device>>(devices: &[D], if_name: &str) -> Option<Device> {
    devices
        .iter()
        .map(std::borrow::Borrow::borrow)
        .find(|d| string_attr(d, names::IF_NAME).as_deref() == Some(if_name))
        .cloned()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Waits (bounded) until the published list satisfies `pred`; names `what` on timeout.
async fn wait_for(
    devices: &mut watch::Receiver<Vec<Arc<Device>>>,
    what: &str,
    pred: impl Fn(&[Arc<Device>]) -> bool,
) -> Result<Vec<Arc<Device>>> {
    let deadline = Instant::now() + WAIT;
    loop {
        {
            let current = devices.borrow_and_update();
            if pred(&current) {
                return Ok(current.clone());
            }
        }
        match timeout_at(deadline, devices.changed()).await {
            Err(_) => bail!(
                "timed out waiting for {what}; published: {:?}",
                if_names(&devices.borrow())
            ),
            Ok(Err(_)) => bail!("the watcher stopped while waiting for {what}"),
            Ok(Ok(())) => {}
        }
    }
}

#[tokio::test]
async fn publishes_exactly_the_offerable_interfaces() -> Result<()> {
    let node = FakeNode::populated("disc-set")?;
    let report = node.discovery(node.config())?.report().await?;

    assert_eq!(if_names(&report.devices), set(OFFERED));
    let skipped: BTreeMap<&str, &str> = report
        .skipped
        .iter()
        .map(|(i, why)| (i.as_str(), why.as_str()))
        .collect();
    assert_eq!(skipped.get("lo"), Some(&"loopback"));
    assert_eq!(skipped.get("br0"), Some(&"carries a default route"));
    assert_eq!(skipped.get("mvup"), Some(&"carries a default route"));
    assert_eq!(
        skipped.get("port0"),
        Some(&"enslaved to an excluded interface")
    );
    assert_eq!(
        skipped.get("lower0"),
        Some(&"lower device of an excluded interface")
    );

    let kinds: BTreeMap<String, String> = report
        .devices
        .iter()
        .map(|d| {
            (
                string_attr(d, names::IF_NAME).unwrap(),
                string_attr(d, names::TYPE).unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds["veth0"], "veth");
    assert_eq!(kinds["mv0"], "macvlan");
    assert_eq!(kinds["vx0"], "vxlan");
    assert_eq!(
        skipped.get("br1"),
        Some(&"a Linux bridge or one of its ports")
    );
    assert_eq!(
        skipped.get("port1"),
        Some(&"a Linux bridge or one of its ports")
    );

    let veth0 = by_if_name(&report.devices, "veth0").unwrap();
    assert_eq!(
        veth0.name, "veth0",
        "a virtual NIC is named after its interface"
    );
    assert_eq!(attr(&veth0, names::VIRTUAL).unwrap().bool, Some(true));
    assert_eq!(attr(&veth0, names::MTU).unwrap().int, Some(1500));
    assert_eq!(attr(&veth0, names::RDMA).unwrap().bool, Some(false));
    assert_eq!(
        string_attr(&veth0, names::IPV4).as_deref(),
        Some("198.51.100.10/24")
    );
    assert_eq!(
        string_attr(&veth0, names::IPV6).as_deref(),
        Some("2001:db8::10/64")
    );
    // Link state is no attribute (it changes on every flap); the report carries it for
    // device health.
    assert_eq!(attr(&veth0, "state"), None);
    assert_eq!(attr(&veth0, "carrier"), None);
    match report.links.get("veth0") {
        Some(DeviceLink::Host(link)) => {
            assert_eq!(
                (
                    link.if_name.as_str(),
                    link.admin_up,
                    link.oper_state.as_str()
                ),
                ("veth0", false, "down")
            );
        }
        other => panic!("veth0's link: {other:?}"),
    }
    assert_eq!(attr(&veth0, names::PCI_ADDRESS), None);
    let mac = node.netns.link_json("veth0")?["address"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(string_attr(&veth0, names::MAC), Some(mac));
    assert_eq!(
        attr(&by_if_name(&report.devices, "vx0").unwrap(), names::MTU)
            .unwrap()
            .int,
        Some(1450)
    );

    // The prepare code's lookup.
    let discovery = node.discovery(node.config())?;
    discovery.refresh().await?;
    let host = discovery.inventory().host_device("veth1").unwrap();
    assert_eq!(host.if_name, "veth1");
    assert_eq!(host.kind.as_deref(), Some("veth"));
    let index = node.netns.link_json("veth1")?["ifindex"].as_u64().unwrap();
    assert_eq!(u64::from(host.if_index), index);
    assert!(
        discovery.inventory().host_device("br0").is_none(),
        "the uplink is not published"
    );
    Ok(())
}

/// A link losing and regaining carrier changes the link states the watcher reports (device
/// health comes from them) and nothing in the published devices: link state is not an
/// attribute, so a flapping link costs no slice write.
#[tokio::test]
async fn link_flaps_reach_the_link_states_not_the_devices() -> Result<()> {
    let node = FakeNode::empty("disc-flap")?;
    node.netns.add_veth("f0", "f1")?;
    node.ip(&["link", "set", "f1", "up"])?;
    node.ip(&["link", "set", "f0", "up"])?;
    let discovery = node.discovery(node.config())?;
    let shutdown = CancellationToken::new();
    let mut handle = discovery.watch(shutdown.clone()).await?;
    let carrier = |links: &netclaim::discovery::LinkStates| match links.get("f0") {
        Some(DeviceLink::Host(link)) => (link.admin_up, link.carrier),
        _ => (false, None),
    };
    let mut wait_links = async |what: &str, want: (bool, Option<bool>)| -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            if carrier(&handle.links.borrow_and_update()) == want {
                return Ok(());
            }
            timeout_at(deadline, handle.links.changed())
                .await
                .with_context(|| format!("waiting for {what}"))??;
        }
    };
    wait_links("f0 up with carrier", (true, Some(true))).await?;
    let devices = handle.devices.borrow_and_update().clone();
    assert_eq!(if_names(&devices), set(&["f0", "f1"]));

    // The peer goes down: f0 loses carrier.
    node.ip(&["link", "set", "f1", "down"])?;
    wait_links("f0 without carrier", (true, Some(false))).await?;
    // The pass that reported it sent the device list first if it had changed.
    assert!(
        !handle.devices.has_changed()?,
        "a carrier loss changed the published devices: {:?}",
        handle.devices.borrow()
    );
    node.ip(&["link", "set", "f1", "up"])?;
    wait_links("f0 with carrier again", (true, Some(true))).await?;
    assert!(!handle.devices.has_changed()?);
    assert_eq!(*handle.devices.borrow(), devices);
    shutdown.cancel();
    handle.task.await??;
    Ok(())
}

#[tokio::test]
async fn hot_plug_is_observed_through_the_watcher() -> Result<()> {
    let node = FakeNode::empty("disc-hp")?;
    node.netns.add_veth("a0", "a1")?;
    let discovery = node.discovery(node.config())?;
    let inventory = discovery.inventory();
    let shutdown = CancellationToken::new();
    let mut handle = discovery.watch(shutdown.clone()).await?;
    let rx = &mut handle.devices;
    wait_for(rx, "the initial pair", |d| {
        if_names(d) == set(&["a0", "a1"])
    })
    .await?;

    node.netns.add_veth("hp0", "hp1")?;
    wait_for(rx, "an added pair", |d| {
        if_names(d) == set(&["a0", "a1", "hp0", "hp1"])
    })
    .await?;

    node.ip(&["addr", "add", "203.0.113.7/24", "dev", "hp0"])?;
    wait_for(rx, "an address change", |d| {
        by_if_name(d, "hp0")
            .and_then(|x| string_attr(&x, names::IPV4))
            .as_deref()
            == Some("203.0.113.7/24")
    })
    .await?;

    node.ip(&["link", "set", "hp0", "mtu", "1400"])?;
    wait_for(rx, "an MTU change", |d| {
        by_if_name(d, "hp0").and_then(|x| attr(&x, names::MTU).and_then(|a| a.int)) == Some(1400)
    })
    .await?;

    node.ip(&["link", "set", "hp1", "name", "hp9"])?;
    wait_for(rx, "a rename", |d| {
        if_names(d) == set(&["a0", "a1", "hp0", "hp9"])
    })
    .await?;

    // A new default route turns a0 into an uplink: it leaves the published set.
    node.ip(&["link", "set", "a0", "up"])?;
    node.ip(&["route", "add", "default", "dev", "a0"])?;
    wait_for(rx, "a default-route change", |d| {
        if_names(d) == set(&["a1", "hp0", "hp9"])
    })
    .await?;

    node.ip(&["link", "del", "hp0"])?;
    wait_for(rx, "a removed pair", |d| if_names(d) == set(&["a1"])).await?;

    // A held device stays published with its last attributes after it left the host...
    node.netns.add_veth("held0", "held1")?;
    wait_for(rx, "the pair to hold", |d| {
        if_names(d) == set(&["a1", "held0", "held1"])
    })
    .await?;
    inventory.hold("held0", None);
    // Deleting one end of a veth pair deletes both: once held1 is seen gone, the same
    // pass also saw held0 gone, and held0 must still be published.
    node.ip(&["link", "del", "held0"])?;
    let after = wait_for(rx, "the held pair to go", |d| {
        !if_names(d).contains("held1")
    })
    .await?;
    assert!(
        if_names(&after).contains("held0"),
        "held device dropped: {:?}",
        if_names(&after)
    );
    assert!(
        inventory.host_device("held0").is_none(),
        "a held device that left has no host NIC"
    );
    // ...until it is released.
    inventory.release("held0");
    wait_for(rx, "the released device to go", |d| {
        if_names(d) == set(&["a1"])
    })
    .await?;

    shutdown.cancel();
    tokio::time::timeout(WAIT, handle.task)
        .await??
        .context("the watcher's result")?;
    Ok(())
}

#[tokio::test]
async fn the_filter_narrows_the_set_and_missing_attributes_exclude() -> Result<()> {
    let node = FakeNode::populated("disc-filter")?;
    let with_filter = |expr: &str| -> Result<DiscoveryConfig> {
        Ok(DiscoveryConfig {
            filter: Some(Arc::new(DeviceFilter::new(expr)?)),
            ..node.config()
        })
    };

    let veths = node
        .discovery(with_filter(
            r#"device.attributes["netclaim.dev"].type == "veth""#,
        )?)?
        .report()
        .await?;
    assert_eq!(
        if_names(&veths.devices),
        set(&["lower0p", "port0p", "port1p", "veth0", "veth1"])
    );

    // No NIC here has a PCI address: reading it is NoSuchKey, which excludes the device.
    let none = node
        .discovery(with_filter(
            r#"device.attributes["netclaim.dev"].pciAddress == "0000:03:00.0""#,
        )?)?
        .report()
        .await?;
    assert!(none.devices.is_empty(), "{:?}", if_names(&none.devices));
    let reason = none.skipped.iter().find(|(i, _)| i == "veth0").unwrap();
    assert!(reason.1.contains("No such key"), "{reason:?}");

    // has() guards make the same selection safe.
    let guarded = node
        .discovery(with_filter(
            r#"!has(device.attributes["netclaim.dev"].pciAddress) && device.driver == "netclaim.dev""#,
        )?)?
        .report()
        .await?;
    assert_eq!(if_names(&guarded.devices), set(OFFERED));
    Ok(())
}

#[tokio::test]
async fn invalid_names_and_oversized_values_are_made_valid() -> Result<()> {
    let node = FakeNode::empty("disc-bad")?;
    // Linux accepts interface names a DNS label cannot hold.
    node.netns.add_veth("Bad_Name.1", "bad-name-1")?;
    let alias = "x".repeat(200);
    node.ip(&["link", "set", "bad-name-1", "alias", &alias])?;
    for i in 1..=12 {
        node.ip(&[
            "addr",
            "add",
            &format!("192.0.2.{i}/24"),
            "dev",
            "bad-name-1",
        ])?;
    }
    let report = node.discovery(node.config())?.report().await?;
    assert_eq!(report.devices.len(), 2);
    for device in &report.devices {
        assert!(names::is_dns_label(&device.name), "{}", device.name);
        for (name, value) in device.attributes.iter().flatten() {
            assert!(names::is_qualified_name(name), "{name}");
            let len = value.string.as_ref().map_or(0, String::len);
            assert!(len <= names::MAX_STRING_VALUE_LEN, "{name} is {len} bytes");
        }
    }
    let odd = by_if_name(&report.devices, "Bad_Name.1").unwrap();
    assert_ne!(
        odd.name, "bad-name-1",
        "must not collide with the other interface's name"
    );
    let plain = by_if_name(&report.devices, "bad-name-1").unwrap();
    assert_eq!(plain.name, "bad-name-1");
    assert_eq!(string_attr(&plain, names::ALIAS).unwrap(), "x".repeat(64));
    let ipv4 = string_attr(&plain, names::IPV4).unwrap();
    assert!(ipv4.starts_with("192.0.2.1/24,192.0.2.2/24"), "{ipv4}");
    assert!(
        ipv4.split(',').all(|a| a.parse::<ipnet::IpNet>().is_ok()),
        "cut mid-address: {ipv4}"
    );
    Ok(())
}

#[test]
fn too_many_attributes_drop_the_lowest_priority_first() {
    let mut list: attributes::AttributeList = ATTRIBUTE_PRIORITY
        .iter()
        .map(|n| {
            (
                (*n).to_owned(),
                DeviceAttribute {
                    bool: Some(true),
                    ..Default::default()
                },
            )
        })
        .collect();
    for i in 0..20 {
        list.push((
            format!("extra{i}"),
            DeviceAttribute {
                int: Some(i),
                ..Default::default()
            },
        ));
    }
    list.insert(3, ("not a name".to_owned(), DeviceAttribute::default()));
    let kept = attributes::apply_limits(list);
    assert_eq!(kept.len(), names::MAX_ATTRIBUTES_PER_DEVICE);
    assert!(!kept.contains_key("not a name"));
    for name in ATTRIBUTE_PRIORITY {
        assert!(
            kept.contains_key(*name),
            "{name} dropped before lower-priority extras"
        );
    }
    // Extras fill what the priority list leaves free (nothing, once it has 32 names).
    let extras = names::MAX_ATTRIBUTES_PER_DEVICE - ATTRIBUTE_PRIORITY.len();
    for i in 0..20 {
        assert_eq!(
            kept.contains_key(&format!("extra{i}")),
            i < extras,
            "extra{i}"
        );
    }
}

#[test]
fn an_invalid_filter_is_refused_with_the_reason() {
    let err = DeviceFilter::new("device.attributes[")
        .unwrap_err()
        .to_string();
    assert!(err.contains("--filter"), "{err}");
    let err = DeviceFilter::new(r#"dev.driver == "x""#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"dev\""), "{err}");
}

// ---- sysfs fixtures ---------------------------------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sysfs")
}

fn fixture_report(if_names: &[&str], multus: Option<&str>) -> Report {
    let nics = if_names
        .iter()
        .enumerate()
        .map(|(i, name)| NicRecord {
            link: LinkRecord {
                index: u32::try_from(i).unwrap() + 2,
                name: (*name).to_owned(),
                mtu: 1500,
                oper_state: "up".into(),
                ..LinkRecord::default()
            },
            sysfs: sysfs::read_nic(&fixtures(), name),
        })
        .collect();
    let config = DiscoveryConfig {
        sysfs_root: fixtures(),
        multus_resource_name: multus.map(str::to_owned),
        ..DiscoveryConfig::default()
    };
    build_report(&config, nics, Vec::new())
}

#[test]
fn sriov_pf_with_rdma_and_numa() {
    let report = fixture_report(&["ens1f0"], Some("nvidia.com/sriov_rdma"));
    let pf = &report.devices[0];
    assert_eq!(pf.name, "pci-0000-03-00-0");
    let s = |n| string_attr(pf, n);
    let i = |n| attr(pf, n).and_then(|a| a.int);
    let b = |n| attr(pf, n).and_then(|a| a.bool);
    assert_eq!(s(names::PCI_ADDRESS).as_deref(), Some("0000:03:00.0"));
    assert_eq!(s(names::PCIE_ROOT).as_deref(), Some("pci0000:00"));
    assert_eq!(s(names::PCI_VENDOR_ID).as_deref(), Some("15b3"));
    assert_eq!(s(names::PCI_DEVICE_ID).as_deref(), Some("1017"));
    assert_eq!(s(names::PCI_SUBSYSTEM_DEVICE_ID).as_deref(), Some("0007"));
    assert_eq!(s(names::KERNEL_DRIVER).as_deref(), Some("mlx5_core"));
    assert_eq!(s(names::RDMA_DEVICE).as_deref(), Some("mlx5_0"));
    assert_eq!(s(names::TYPE).as_deref(), Some("device"));
    assert_eq!(
        s(names::MULTUS_RESOURCE_NAME).as_deref(),
        Some("nvidia.com/sriov_rdma")
    );
    assert_eq!(s(names::MULTUS_DEVICE_ID).as_deref(), Some("0000:03:00.0"));
    assert_eq!(i(names::NUMA_NODE), Some(0));
    assert_eq!(i(names::STANDARD_NUMA_NODE), Some(0));
    assert_eq!(i(names::SRIOV_VFS), Some(2));
    assert_eq!(i(names::SRIOV_TOTAL_VFS), Some(8));
    assert_eq!(i(names::SPEED), Some(100_000));
    assert_eq!(b(names::SRIOV), Some(true));
    assert_eq!(b(names::IS_SRIOV_VF), Some(false));
    assert_eq!(b(names::RDMA), Some(true));
    assert_eq!(b(names::VIRTUAL), Some(false));
}

#[test]
fn sriov_vf_knows_its_pf() {
    let nic = sysfs::read_nic(&fixtures(), "ens1f0v0");
    assert!(nic.is_sriov_vf());
    assert!(!nic.is_sriov_pf());
    assert_eq!(nic.pf_pci_address.as_deref(), Some("0000:03:00.0"));
    assert_eq!(nic.pf_name.as_deref(), Some("ens1f0"));
    assert_eq!(nic.vf_index, Some(0));
    let report = fixture_report(&["ens1f0v0"], None);
    let vf = &report.devices[0];
    assert_eq!(vf.name, "pci-0000-03-00-2");
    assert_eq!(
        attr(vf, names::IS_SRIOV_VF).and_then(|a| a.bool),
        Some(true)
    );
    assert_eq!(attr(vf, names::SRIOV_VFS), None);
    assert_eq!(
        attr(vf, names::MULTUS_RESOURCE_NAME),
        None,
        "no Multus attributes unless configured"
    );
}

#[test]
fn numa_one_other_root_complex_and_unknown_values() {
    let ens2 = sysfs::read_nic(&fixtures(), "ens2");
    assert_eq!(ens2.numa_node, Some(1));
    let report = fixture_report(&["ens2", "eth0"], None);
    let standard = |device: &Device| {
        (
            string_attr(device, names::PCIE_ROOT),
            attr(device, names::STANDARD_NUMA_NODE).and_then(|a| a.int),
        )
    };
    assert_eq!(
        standard(&by_if_name(&report.devices, "ens2").unwrap()),
        (Some("pci0000:40".into()), Some(1))
    );
    // No NUMA affinity (-1): no standard numaNode, which would match every other such
    // device under matchAttribute.
    assert_eq!(
        standard(&by_if_name(&report.devices, "eth0").unwrap()),
        (Some("pci0000:00".into()), None)
    );
    assert_eq!(ens2.pcie_root.as_deref(), Some("pci0000:40"));
    assert_eq!(ens2.kernel_driver.as_deref(), Some("ice"));
    assert!(!ens2.is_sriov_pf(), "0 total VFs is not SR-IOV");
    assert_eq!(ens2.speed_mbps, None, "speed -1 means unknown");

    // virtio-net: the netdev's parent is virtio0; the PCI facts come from its PCI parent.
    let virtio = sysfs::read_nic(&fixtures(), "eth0");
    assert_eq!(virtio.pci_address.as_deref(), Some("0000:00:03.0"));
    assert_eq!(virtio.vendor_id.as_deref(), Some("1af4"));
    assert_eq!(virtio.kernel_driver.as_deref(), Some("virtio_net"));
    assert_eq!(virtio.numa_node, None, "numa_node -1 means none");
}

#[test]
fn devices_without_pci_parent_or_without_device() {
    let platform = sysfs::read_nic(&fixtures(), "end0");
    assert!(!platform.is_virtual);
    assert_eq!(platform.pci_address, None);
    assert_eq!(platform.pcie_root, None);
    assert_eq!(platform.kernel_driver.as_deref(), Some("macb"));
    let report = fixture_report(&["end0", "veth0"], Some("example.com/x"));
    assert_eq!(report.devices[0].name, "end0");
    assert_eq!(
        attr(&report.devices[0], names::MULTUS_DEVICE_ID),
        None,
        "deviceID needs a PCI address"
    );
    let veth = sysfs::read_nic(&fixtures(), "veth0");
    assert!(veth.is_virtual);
    assert_eq!(
        veth,
        sysfs::SysfsNic {
            is_virtual: true,
            ..Default::default()
        }
    );
}

#[test]
fn netdevs_sharing_a_pci_function_get_interface_names() {
    let mut report = fixture_report(&["ens1f0"], None);
    assert_eq!(report.devices[0].name, "pci-0000-03-00-0");
    let nic = |name: &str| NicRecord {
        link: LinkRecord {
            name: name.into(),
            ..LinkRecord::default()
        },
        sysfs: sysfs::read_nic(&fixtures(), "ens1f0"),
    };
    report = build_report(
        &DiscoveryConfig::default(),
        vec![nic("ens1f0"), nic("ens1f0r1")],
        Vec::new(),
    );
    let names: BTreeSet<String> = report.devices.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, set(&["ens1f0", "ens1f0r1"]));
}

// ---- the binary --------------------------------------------------------------------

/// The workspace's `netclaim` binary, built on first use by the node harness.
fn netclaim_binary() -> Result<PathBuf> {
    netclaim_test::node::netclaim_binary()
}

#[tokio::test]
async fn the_devices_command_prints_resource_slices() -> Result<()> {
    let bin = netclaim_binary()?;
    let node = FakeNode::populated("disc-bin")?;
    let bin = bin.to_string_lossy();
    // `ip netns exec` remounts /sys for the netns, so the default --sysfs-root works.
    let out = node.netns.exec(&[
        &bin,
        "devices",
        "-o",
        "json",
        "--node-name",
        "node-a",
        "--include-virtual",
    ])?;
    let list: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let slice = &items[0];
    assert_eq!(slice["apiVersion"], "resource.k8s.io/v1");
    assert_eq!(slice["kind"], "ResourceSlice");
    assert_eq!(slice["spec"]["driver"], "netclaim.dev");
    assert_eq!(slice["spec"]["nodeName"], "node-a");
    assert_eq!(slice["spec"]["pool"]["name"], "node-a");
    assert_eq!(slice["spec"]["pool"]["resourceSliceCount"], 1);
    let devices: Vec<Device> = serde_json::from_value(slice["spec"]["devices"].clone())?;
    assert_eq!(if_names(&devices), set(OFFERED));

    let table = node.netns.exec(&[&bin, "devices", "--include-virtual"])?;
    assert!(
        table.lines().next().unwrap().starts_with("DEVICE"),
        "{table}"
    );
    assert!(table.contains("br0: carries a default route"), "{table}");

    let bad = node
        .netns
        .exec(&[&bin, "devices", "--filter", "device.attributes["])
        .unwrap_err()
        .to_string();
    assert!(bad.contains("invalid --filter expression"), "{bad}");
    Ok(())
}

/// Without flags the binary publishes no virtual device: on a real node those are other
/// pods' host-side veths, overlays and tunnels. Each is listed as left out, with the flag
/// that would publish it.
#[tokio::test]
async fn the_default_leaves_every_virtual_device_out() -> Result<()> {
    let bin = netclaim_binary()?;
    let node = FakeNode::populated("disc-virt")?;
    // The populated node has veths, a macvlan (mv0) and a vxlan (vx0); add a CNI-style
    // host-side veth.
    let ip = |args: &[&str]| node.netns.ip(args);
    ip(&[
        "link", "add", "cali1", "type", "veth", "peer", "name", "cali1p",
    ])?;
    let bin = bin.to_string_lossy();
    let out = node
        .netns
        .exec(&[&bin, "devices", "-o", "json", "--node-name", "node-a"])?;
    let list: serde_json::Value = serde_json::from_str(&out)?;
    let published: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|slice| {
            slice["spec"]["devices"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|device| device["name"].to_string())
        .collect();
    assert!(published.is_empty(), "published by default: {published:?}");
    let table = node.netns.exec(&[&bin, "devices"])?;
    for name in ["veth0", "vx0", "mv0", "cali1"] {
        assert!(
            table.lines().any(|line| line
                .trim_start()
                .starts_with(&format!("{name}: virtual device"))
                && line.contains("--include-virtual")),
            "{name} not listed as a left-out virtual device:\n{table}"
        );
    }
    Ok(())
}

// ---- publication -------------------------------------------------------------------

/// Waits (bounded) until the API server's slices satisfy `pred`, re-checking on every
/// publisher status change.
async fn wait_published(
    server: &ApiServer,
    publisher: &ResourceSlicePublisher,
    what: &str,
    pred: impl Fn(&BTreeSet<String>) -> bool,
) -> Result<BTreeSet<String>> {
    let mut status = publisher.status();
    let deadline = Instant::now() + WAIT;
    loop {
        status.borrow_and_update();
        let published = published_if_names(server).await?;
        if pred(&published) {
            return Ok(published);
        }
        timeout_at(deadline, status.changed())
            .await
            .with_context(|| {
                format!(
                    "timed out waiting for {what}; published {published:?}; status {:?}",
                    status.borrow()
                )
            })??;
    }
}

async fn published_if_names(server: &ApiServer) -> Result<BTreeSet<String>> {
    let slices = Api::<ResourceSlice>::all(server.client())
        .list(&ListParams::default())
        .await?;
    let mut names = BTreeSet::new();
    for slice in slices.items {
        assert_eq!(slice.spec.driver, "netclaim.dev");
        assert_eq!(slice.spec.pool.name, "node-a");
        names.extend(if_names(slice.spec.devices.as_deref().unwrap_or_default()));
    }
    Ok(names)
}

#[tokio::test]
async fn discovered_devices_reach_the_api_server() -> Result<()> {
    let node = FakeNode::populated("disc-pub")?;
    let server = ApiServer::start().await?;
    let node_object = Node {
        metadata: ObjectMeta {
            name: Some("node-a".into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    Api::<Node>::all(server.client())
        .create(&PostParams::default(), &node_object)
        .await?;
    let publisher = ResourceSlicePublisher::start(
        server.client(),
        PublisherConfig {
            driver_name: "netclaim.dev".into(),
            node_name: "node-a".into(),
            node_uid: None,
        },
    );
    let shutdown = CancellationToken::new();
    let mut handle = node
        .discovery(node.config())?
        .watch(shutdown.clone())
        .await?;
    let devices = handle.devices.borrow_and_update().clone();
    publisher.update(driver_resources("node-a", devices));
    wait_published(&server, &publisher, "the first publication", |p| {
        *p == set(OFFERED)
    })
    .await?;

    // A hot-plugged pair travels the daemon's path: watcher, publisher, API server.
    node.netns.add_veth("new0", "new1")?;
    let devices = wait_for(&mut handle.devices, "the new pair", |d| {
        if_names(d).contains("new0") && if_names(d).contains("new1")
    })
    .await?;
    publisher.update(driver_resources("node-a", devices));
    let mut expected = set(OFFERED);
    expected.extend(set(&["new0", "new1"]));
    wait_published(&server, &publisher, "the new pair", |p| *p == expected).await?;

    shutdown.cancel();
    publisher.shutdown(true).await;
    assert!(published_if_names(&server).await?.is_empty());
    server.shutdown().await;
    Ok(())
}

// ---- shared parent NICs -------------------------------------------------------------

#[tokio::test]
async fn shared_parents_are_published_with_consumable_capacity_the_api_accepts() -> Result<()> {
    use netclaim::discovery::SharedNics;
    let node = FakeNode::populated("disc-shared")?;
    let config = DiscoveryConfig {
        shared: Some(SharedNics {
            filter: Arc::new(DeviceFilter::for_flag(
                "--shared-filter",
                r#"device.attributes["netclaim.dev"].ifName == "veth0""#,
            )?),
            children: 4,
        }),
        ..node.config()
    };
    let discovery = node.discovery(config)?;
    let report = discovery.report().await?;
    assert_eq!(
        if_names(&report.devices),
        set(OFFERED),
        "sharing filters nothing out"
    );

    let parent = by_if_name(&report.devices, "veth0").unwrap();
    assert_eq!(parent.allow_multiple_allocations, Some(true));
    assert_eq!(
        attr(&parent, names::SHARED).and_then(|a| a.bool),
        Some(true)
    );
    let capacity = parent.capacity.as_ref().unwrap();
    assert_eq!(capacity.len(), 1);
    let children = &capacity[names::CHILDREN];
    assert_eq!(children.value.0, "4");
    let policy = children.request_policy.as_ref().unwrap();
    assert_eq!(policy.default.as_ref().map(|q| q.0.as_str()), Some("1"));
    let valid: Vec<&str> = policy
        .valid_values
        .iter()
        .flatten()
        .map(|q| q.0.as_str())
        .collect();
    assert_eq!(valid, vec!["1"]);
    assert_eq!(
        discovery
            .inventory()
            .host_device(&parent.name)
            .unwrap()
            .shared_children,
        Some(4)
    );
    for device in report.devices.iter().filter(|d| d.name != parent.name) {
        assert_eq!(device.allow_multiple_allocations, None, "{}", device.name);
        assert_eq!(device.capacity, None, "{}", device.name);
        assert!(attr(device, names::SHARED).is_none(), "{}", device.name);
        assert_eq!(
            discovery
                .inventory()
                .host_device(&device.name)
                .unwrap()
                .shared_children,
            None
        );
    }

    // The stand-in enforces the API's rules for consumable capacity (on by default from
    // 1.36; with it off the fields would be dropped unchecked): the slice goes in.
    let server = ApiServer::start_with(ApiServerOptions::kubernetes(36)).await?;
    let slices =
        netclaim::discovery::slices::resource_slices("netclaim.dev", "node-a", 1, &report.devices);
    for slice in slices {
        Api::<ResourceSlice>::all(server.client())
            .create(&PostParams::default(), &slice)
            .await?;
    }
    server.shutdown().await;
    Ok(())
}

/// The capacity takes one of the 32 places for attributes and capacities: a shared parent
/// keeps every attribute it would have unshared (plus `shared`) while they fit, and when a
/// list is full the lowest-priority attribute makes room, never `shared`.
#[test]
fn a_shared_parent_stays_within_32_attributes_and_capacities() {
    let nic = NicRecord {
        link: LinkRecord {
            index: 2,
            name: "ens1f0".into(),
            mtu: 1500,
            oper_state: "up".into(),
            mac: Some("02:00:00:00:00:01".into()),
            perm_mac: Some("02:00:00:00:00:02".into()),
            alias: Some("uplink".into()),
            carrier: Some(true),
            ..LinkRecord::default()
        },
        sysfs: sysfs::read_nic(&fixtures(), "ens1f0"),
    };
    let unshared = attributes::build_device(&nic, Some("nvidia.com/sriov_rdma"), None);
    let shared = attributes::build_device(&nic, Some("nvidia.com/sriov_rdma"), Some(8));
    let mut expected = unshared.attributes.clone().unwrap();
    expected.insert(
        names::SHARED.to_owned(),
        DeviceAttribute {
            bool: Some(true),
            ..Default::default()
        },
    );
    assert_eq!(shared.attributes.as_ref(), Some(&expected));
    assert_eq!(shared.capacity.as_ref().map(|c| c.len()), Some(1));

    // A full list: every attribute there is (padded to the limit with attributes of another
    // domain), capacity included, is over the limit by one.
    let mut names_in_order: Vec<String> =
        ATTRIBUTE_PRIORITY.iter().map(|n| (*n).to_owned()).collect();
    assert!(names_in_order.len() <= names::MAX_ATTRIBUTES_PER_DEVICE);
    let padding = names::MAX_ATTRIBUTES_PER_DEVICE - names_in_order.len();
    names_in_order.extend((0..padding).map(|i| format!("example.com/pad{i}")));
    let full: attributes::AttributeList = names_in_order
        .iter()
        .map(|n| {
            (
                n.clone(),
                DeviceAttribute {
                    bool: Some(true),
                    ..Default::default()
                },
            )
        })
        .collect();
    assert_eq!(full.len(), names::MAX_ATTRIBUTES_PER_DEVICE);
    let kept = attributes::apply_limits_within(full, names::MAX_ATTRIBUTES_PER_DEVICE - 1);
    assert_eq!(kept.len(), names::MAX_ATTRIBUTES_PER_DEVICE - 1);
    assert!(kept.contains_key(names::SHARED));
    let lowest = names_in_order.last().unwrap();
    assert!(!kept.contains_key(lowest), "{lowest} should make room");
}
