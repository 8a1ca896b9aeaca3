//! The node end to end on a real containerd (1.7 or 2.x) with NRI (issue 5): containerd creates
//! the pods' network namespaces and gives them their CNI `eth0`; the kubelet stand-in
//! prepares claims over the driver's DRA socket; pods are run, stopped and removed through
//! CRI as the kubelet does; the real `netclaim run` is connected to containerd's NRI socket.
//! Claims are exercised in both modes: NICs moved into pods, and CNI mode (macvlan
//! children, leases, failing chains, shared parents with network-status annotations).
//!
//! Runs on the containerd `NETCLAIM_CONTAINERD_MAJOR` chooses (`1`, the default: 1.7.24;
//! `2`: 2.1.9; `hack/test.sh` runs this file on both) and prints which. Fails, naming
//! `hack/install-deps.sh`, when that containerd is not installed. Each test shares one node
//! across its steps to keep the file cheap: a containerd node takes about a second to start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use netclaim_test::apiserver::ApiServerOptions;
use netclaim_test::node::checks::{config, has_addr, host_view, nic, pod_link};
use netclaim_test::node::{NicClaim, NodeOptions, RuntimeKind, TestNode};
use serde_json::{Value, json};

fn uid(n: u32) -> String {
    format!(
        "00000000-0000-4000-9000-{:012x}",
        u64::from(n) + u64::from(std::process::id()) * 1000
    )
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn claims_in_checkpoint(node: &TestNode) -> Value {
    node.prepared_claims().unwrap()
}

/// A node on the containerd `NETCLAIM_CONTAINERD_MAJOR` chooses; fails (naming
/// `hack/install-deps.sh`) when that containerd is not installed.
async fn start(nics: usize) -> TestNode {
    let options = NodeOptions {
        runtime: RuntimeKind::Containerd,
        nics,
        ..NodeOptions::default()
    };
    TestNode::start(options)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"))
}

/// Allocates and prepares `claim` for a pod, asserting prepare succeeded.
async fn allocate_and_prepare(
    node: &TestNode,
    claim: NicClaim,
    pod: &str,
    pod_uid: &str,
) -> kubeletplugin::ClaimRef {
    let claim = node.allocate(&[claim], pod, pod_uid).await.unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(
        prepared[&claim.uid].error, "",
        "prepare of {} failed",
        claim.name
    );
    claim
}

async fn unprepare_cleanly(node: &TestNode, claim: kubeletplugin::ClaimRef) {
    let name = claim.name.clone();
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(
        unprepared.values().all(String::is_empty),
        "unprepare {name}: {unprepared:?}"
    );
}

/// The claimed NIC's status as the driver wrote it (in the background), once written.
async fn claim_device_status(
    node: &TestNode,
    name: &str,
) -> k8s_openapi::api::resource::v1::AllocatedDeviceStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let claim = node.claim(name).await.unwrap();
        let devices = claim.status.and_then(|s| s.devices).unwrap_or_default();
        if let Some(device) = devices.into_iter().next() {
            return device;
        }
        assert!(
            Instant::now() < deadline,
            "no status.devices written for {name}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_on_containerd_get_their_nic_errors_are_clear_and_churn_leaks_nothing() {
    let mut node = start(2).await;

    // 1. A configured NIC next to containerd's eth0, and given back exactly.
    node.ip(&["addr", "add", "192.0.2.77/24", "dev", "eth1"])
        .unwrap();
    node.ip(&["link", "set", "eth1", "mtu", "1400", "up"])
        .unwrap();
    let before = host_view(&node.node_link("eth1").unwrap());
    let pod_uid = uid(1);
    let cfg = config(json!({
        "name": "net1",
        "addresses": ["192.0.2.10/24", "2001:db8::10/64"],
        "mtu": 1500,
        "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.1"}]
    }));
    let claim =
        allocate_and_prepare(&node, nic("web-nic", "eth1", Some(cfg)), "web", &pod_uid).await;
    let started = Instant::now();
    let pod = node.run_pod("web", &pod_uid).await.unwrap().unwrap();
    eprintln!(
        "RunPodSandbox with one claimed NIC: {:?}",
        started.elapsed()
    );
    let eth0 = pod_link(&node, &pod, "eth0");
    let cni_addr = eth0["addr_info"].as_array().unwrap().iter().any(|a| {
        a["local"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("203.0.113."))
    });
    assert!(cni_addr, "containerd's CNI eth0 is not in the pod: {eth0}");
    let link = pod_link(&node, &pod, "net1");
    assert_eq!(link["mtu"], 1500, "{link}");
    assert_eq!(
        link["address"], before["address"],
        "the NIC's MAC changed in the pod"
    );
    assert!(has_addr(&link, "192.0.2.10/24"), "{link}");
    assert!(has_addr(&link, "2001:db8::10/64"), "{link}");
    let routes = node
        .in_pod(&pod, "ip", &["route", "show", "198.51.100.0/24"])
        .unwrap();
    assert!(routes.contains("via 192.0.2.1 dev net1"), "{routes}");
    node.in_pod(&pod, "ping", &["-c", "1", "-W", "2", "192.0.2.1"])
        .unwrap();
    assert!(node.node_link("eth1").is_err(), "eth1 is still on the node");

    let status = claim_device_status(&node, "web-nic").await;
    let data = status.network_data.expect("networkData");
    assert_eq!(data.interface_name.as_deref(), Some("net1"));
    let ips = data.ips.unwrap_or_default();
    assert!(ips.contains(&"192.0.2.10/24".to_string()), "{ips:?}");
    assert!(ips.contains(&"2001:db8::10/64".to_string()), "{ips:?}");
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status).as_deref(), Some("True"));

    node.delete_pod(pod).await.unwrap();
    assert_eq!(
        host_view(&node.node_link("eth1").unwrap()),
        before,
        "eth1 not given back exactly"
    );
    unprepare_cleanly(&node, claim).await;
    assert_eq!(claims_in_checkpoint(&node), json!({}));

    // 2. A config prepare cannot judge: the gateway is off-link in the pod. containerd fails
    // RunPodSandbox with the driver's message, and the NIC stays on the node untouched.
    let pod_uid = uid(2);
    let cfg = config(json!({"name": "net1", "addresses": ["2001:db8::10/64"],
        "routes": [{"destination": "2001:db8:100::/48", "gateway": "2001:db8:ffff::1"}]}));
    let claim = allocate_and_prepare(
        &node,
        nic("offlink", "eth1", Some(cfg)),
        "offlink",
        &pod_uid,
    )
    .await;
    let error = node
        .run_pod("offlink", &pod_uid)
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.contains("RunPodSandbox"), "not a CRI error: {error}");
    assert!(
        error.contains("netclaim: claim default/offlink"),
        "no driver message: {error}"
    );
    assert!(
        error.contains("interface.routes[0]"),
        "the field is not named: {error}"
    );
    assert_eq!(
        host_view(&node.node_link("eth1").unwrap()),
        before,
        "eth1 changed"
    );
    unprepare_cleanly(&node, claim).await;

    // 3. A hostNetwork pod cannot take a NIC: a clear error, and the NIC stays.
    let before2 = host_view(&node.node_link("eth2").unwrap());
    let pod_uid = uid(3);
    let claim =
        allocate_and_prepare(&node, nic("hostnet", "eth2", None), "hostnet", &pod_uid).await;
    let error = node
        .run_host_network_pod("hostnet", &pod_uid)
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.contains("uses the host network"), "{error}");
    assert!(
        error.contains("default/hostnet"),
        "the claim is not named: {error}"
    );
    assert_eq!(
        host_view(&node.node_link("eth2").unwrap()),
        before2,
        "eth2 changed"
    );
    unprepare_cleanly(&node, claim).await;
    assert_eq!(claims_in_checkpoint(&node), json!({}));
    let leftover = node.runtime_pods().await.unwrap();
    assert!(
        leftover.is_empty(),
        "failed sandboxes left in containerd: {leftover:?}"
    );

    // 4. Churn: 50 pods, each with a claim on eth1, prepared and unprepared around it.
    // First a few pods without claims, so the figures printed have a baseline.
    let mut plain_runs = Vec::new();
    for i in 0..5 {
        let (name, pod_uid) = (format!("plain-{i}"), uid(900 + i));
        let started = Instant::now();
        let pod = node.run_pod(&name, &pod_uid).await.unwrap().unwrap();
        plain_runs.push(started.elapsed());
        node.delete_pod(pod).await.unwrap();
    }
    let links_before = node.node_link_names().unwrap();
    let fds_before = node.driver_fd_count().unwrap();
    let (mut runs, mut deletes) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..50 {
        let (name, pod_uid) = (format!("churn-{i}"), uid(1000 + i));
        let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
        let claim =
            allocate_and_prepare(&node, nic(&name, "eth1", Some(cfg)), &name, &pod_uid).await;
        let run_started = Instant::now();
        let pod = node.run_pod(&name, &pod_uid).await.unwrap().unwrap();
        runs.push(run_started.elapsed());
        assert!(
            has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.10/24"),
            "pod {i}"
        );
        let delete_started = Instant::now();
        node.delete_pod(pod).await.unwrap();
        deletes.push(delete_started.elapsed());
        unprepare_cleanly(&node, claim).await;
    }
    eprintln!(
        "50 pods with a claimed NIC created and deleted in {:?}",
        started.elapsed()
    );
    eprintln!(
        "RunPodSandbox median: {:?} without a claim, {:?} with a claimed NIC; \
         Stop+RemovePodSandbox median with a NIC: {:?}",
        median(plain_runs),
        median(runs),
        median(deletes)
    );
    assert_eq!(
        node.node_link_names().unwrap(),
        links_before,
        "interfaces leaked"
    );
    assert_eq!(
        host_view(&node.node_link("eth1").unwrap()),
        before,
        "eth1 not given back exactly"
    );
    let fds_after = node.driver_fd_count().unwrap();
    assert!(
        fds_after <= fds_before + 4,
        "driver fds grew: {fds_before} -> {fds_after}"
    );
    assert_eq!(
        claims_in_checkpoint(&node),
        json!({}),
        "checkpoint entries left"
    );
    assert_eq!(
        node.runtime_netns_files().unwrap(),
        Vec::<std::path::PathBuf>::new(),
        "pod netns left"
    );
    assert!(node.runtime_pods().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn nics_survive_driver_and_containerd_restarts_and_come_back() {
    let mut node = start(2).await;

    // 1. The driver is SIGKILLed while the pod runs: it reconnects, Synchronize keeps the
    // NIC in the pod, and the pod's STOP gives it back.
    let before = host_view(&node.node_link("eth1").unwrap());
    let pod_uid = uid(10);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim =
        allocate_and_prepare(&node, nic("killed", "eth1", Some(cfg)), "killed", &pod_uid).await;
    let pod = node.run_pod("killed", &pod_uid).await.unwrap().unwrap();
    node.kill_driver().unwrap();
    node.start_driver().await.unwrap();
    assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.10/24"));
    node.delete_pod(pod).await.unwrap();
    assert_eq!(
        host_view(&node.node_link("eth1").unwrap()),
        before,
        "eth1 not given back"
    );
    unprepare_cleanly(&node, claim).await;
    assert_eq!(claims_in_checkpoint(&node), json!({}));

    // 2. containerd restarts while the pod runs: the plugin re-registers and Synchronize
    // keeps the NIC in the pod.
    let links_before = node.node_link_names().unwrap();
    let before = host_view(&node.node_link("eth2").unwrap());
    let pod_uid = uid(11);
    let cfg = config(json!({"name": "net2", "addresses": ["192.0.2.11/24"]}));
    let claim = allocate_and_prepare(
        &node,
        nic("restarted", "eth2", Some(cfg)),
        "restarted",
        &pod_uid,
    )
    .await;
    let pod = node.run_pod("restarted", &pod_uid).await.unwrap().unwrap();
    let registrations = node.nri_registrations();
    node.restart_runtime().await.unwrap();
    node.wait_until("the plugin re-registered with containerd", || {
        node.nri_registrations() > registrations
    })
    .await
    .unwrap();
    assert!(has_addr(&pod_link(&node, &pod, "net2"), "192.0.2.11/24"));
    // containerd 1.7.24 sends no NRI STOP or REMOVE for pods that ran before its restart:
    // the pod is gone, its netns path removed, and the driver was not told.
    node.delete_pod(pod).await.unwrap();
    assert!(
        node.runtime_netns_files().unwrap().is_empty(),
        "containerd kept the pod netns"
    );
    let attachment = &claims_in_checkpoint(&node)[&claim.uid]["nics"][0]["attachment"];
    assert!(
        attachment.is_object(),
        "the driver heard of the pod's end after all: {attachment}"
    );
    // The driver held the pod's netns open, so the veth did not die with it (nor its peer).
    assert!(
        node.lan().has_link("peer2"),
        "eth2's wire died with the pod's netns"
    );
    // The kubelet unprepares the claim once the pod is gone: that gives the NIC back.
    unprepare_cleanly(&node, claim).await;
    assert_eq!(claims_in_checkpoint(&node), json!({}));
    assert_eq!(
        host_view(&node.node_link("eth2").unwrap()),
        before,
        "eth2 not given back exactly"
    );
    assert_eq!(
        node.node_link_names().unwrap(),
        links_before,
        "interfaces leaked or lost"
    );
}

/// CNI mode (issue 6): a macvlan child of `eth1` with a host-local lease kept in
/// `leases`; the lease file exists exactly while ADD's result is live.
fn leased_macvlan(name: &str, leases: &std::path::Path) -> NicClaim {
    // The class's network: a claim may not choose host-local's dataDir.
    netclaim_test::node::checks::cni_nic(
        name,
        "eth1",
        json!({
            "cniVersion": "1.0.0", "name": "leasenet",
            "plugins": [{"type": "macvlan", "mode": "bridge", "ipam": {
                "type": "host-local",
                "dataDir": leases.display().to_string(),
                "ranges": [[{"subnet": "192.0.2.0/24",
                             "rangeStart": "192.0.2.60", "rangeEnd": "192.0.2.60"}]]
            }}]
        }),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cni_mode_on_containerd_adds_next_to_eth0_and_deletes_across_restarts() {
    // The chain of step 3 ends in tuning, which this node's admin allows.
    let options = NodeOptions {
        runtime: RuntimeKind::Containerd,
        nics: 1,
        extra_args: vec![
            "--cni-allowed-plugins".into(),
            "host-local,macvlan,static,tuning".into(),
        ],
        ..NodeOptions::default()
    };
    let mut node = TestNode::start(options)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let leases = tempfile::tempdir().unwrap();
    let lease = leases.path().join("leasenet").join("192.0.2.60");

    // 1. ADD in RUN next to containerd's own eth0; a driver SIGKILL in between; DEL in STOP.
    let pod_uid = uid(20);
    let claim =
        allocate_and_prepare(&node, leased_macvlan("cni", leases.path()), "cni", &pod_uid).await;
    let pod = node.run_pod("cni", &pod_uid).await.unwrap().unwrap();
    let net1 = pod_link(&node, &pod, "net1");
    assert_eq!(net1["linkinfo"]["info_kind"], "macvlan", "{net1}");
    assert!(has_addr(&net1, "192.0.2.60/24"), "{net1}");
    assert!(pod_link(&node, &pod, "eth0").is_object());
    assert!(lease.exists(), "ADD leased nothing");
    let status = claim_device_status(&node, "cni").await;
    let data = status.network_data.expect("no networkData");
    assert_eq!(data.interface_name.as_deref(), Some("net1"));
    assert_eq!(
        data.ips.unwrap_or_default(),
        vec!["192.0.2.60/24".to_owned()]
    );
    node.kill_driver().unwrap();
    node.start_driver().await.unwrap();
    assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.60/24"));
    node.delete_pod(pod).await.unwrap();
    assert!(!lease.exists(), "DEL did not run at STOP");
    assert!(node.node_link("eth1").is_ok(), "the parent left the node");
    unprepare_cleanly(&node, claim).await;
    assert_eq!(claims_in_checkpoint(&node), json!({}));

    // 2. containerd restarts while the pod runs; it sends no STOP for that pod later
    // (1.7.24), so the DEL comes from the kubelet's unprepare.
    let pod_uid = uid(21);
    let claim = allocate_and_prepare(
        &node,
        leased_macvlan("cni2", leases.path()),
        "cni2",
        &pod_uid,
    )
    .await;
    let pod = node.run_pod("cni2", &pod_uid).await.unwrap().unwrap();
    let registrations = node.nri_registrations();
    node.restart_runtime().await.unwrap();
    node.wait_until("the plugin re-registered with containerd", || {
        node.nri_registrations() > registrations
    })
    .await
    .unwrap();
    assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.60/24"));
    node.delete_pod(pod).await.unwrap();
    assert!(
        lease.exists(),
        "the driver heard of the pod's end after all"
    );
    unprepare_cleanly(&node, claim).await;
    assert!(!lease.exists(), "unprepare did not run DEL");
    assert_eq!(claims_in_checkpoint(&node), json!({}));
    assert!(node.node_link("eth1").is_ok(), "the parent left the node");

    // 3. The second plugin of the chain fails after the first leased an address: the CRI
    // error carries the plugin's message, and the chain is undone (the lease released).
    let pod_uid = uid(22);
    let mut failing = leased_macvlan("cni3", leases.path());
    if let Some(plugins) = failing
        .class_config
        .as_mut()
        .and_then(|c| c["cni"]["plugins"].as_array_mut())
    {
        plugins.push(json!({"type": "tuning", "sysctl": {"net.ipv4.conf.net1.no_such_knob": "1"}}));
    }
    let claim = allocate_and_prepare(&node, failing, "cni3", &pod_uid).await;
    let error = node.run_pod("cni3", &pod_uid).await.unwrap().unwrap_err();
    assert!(error.contains("RunPodSandbox"), "not a CRI error: {error}");
    assert!(
        error.contains("claim default/cni3"),
        "the claim is not named: {error}"
    );
    assert!(
        error.contains("no_such_knob"),
        "the plugin's message is missing: {error}"
    );
    assert!(!lease.exists(), "the failed chain kept its lease");
    unprepare_cleanly(&node, claim).await;
    assert_eq!(claims_in_checkpoint(&node), json!({}));
    let leftover = node.runtime_pods().await.unwrap();
    assert!(
        leftover.is_empty(),
        "failed sandboxes left in containerd: {leftover:?}"
    );
}

/// A macvlan child of `eth1` with a static address (CNI mode; the class's network).
fn macvlan_child(name: &str, address: &str) -> NicClaim {
    netclaim_test::node::checks::cni_nic(
        name,
        "eth1",
        json!({
            "cniVersion": "1.0.0", "name": "macnet",
            "plugins": [{"type": "macvlan", "mode": "bridge",
                         "ipam": {"type": "static", "addresses": [{"address": address}]}}]
        }),
    )
}

/// Shared NICs on containerd (issue 6): `eth1` is a shared parent with 3 children; three
/// pods, each with containerd's eth0, get a macvlan child each, reach each other over it,
/// and find it in their `k8s.v1.cni.cncf.io/network-status` annotation exactly as it is in
/// their netns; a fourth claim is over capacity; stopping the pods withdraws the entries
/// and leaves no child on the node.
#[tokio::test(flavor = "multi_thread")]
async fn shared_parent_on_containerd_gives_pods_children_listed_in_network_status() {
    use netclaim::network_status::NETWORK_STATUS_ANNOTATION;
    use netclaim_test::node::checks::{network_status_interfaces, pod_interfaces};

    let options = NodeOptions {
        runtime: RuntimeKind::Containerd,
        nics: 1,
        extra_args: vec![
            "--shared-filter".into(),
            r#"device.attributes["netclaim.dev"].ifName == "eth1""#.into(),
            "--shared-children".into(),
            "3".into(),
        ],
        // Shared NICs are published with consumable capacity: on by default from 1.36.
        api: ApiServerOptions::kubernetes(36),
        ..NodeOptions::default()
    };
    let mut node = TestNode::start(options)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let links_before = node.node_link_names().unwrap();

    let mut running = Vec::new();
    for n in 0..3u8 {
        let name = format!("shared-{n}");
        let pod_uid = node.create_pod_object(&name, json!({})).await.unwrap();
        let address = format!("192.0.2.{}/24", 81 + n);
        let claim =
            allocate_and_prepare(&node, macvlan_child(&name, &address), &name, &pod_uid).await;
        let pod = node.run_pod(&name, &pod_uid).await.unwrap().unwrap();
        let net1 = pod_link(&node, &pod, "net1");
        assert_eq!(net1["linkinfo"]["info_kind"], "macvlan", "{net1}");
        assert!(has_addr(&net1, &address), "{net1}");
        assert!(
            pod_link(&node, &pod, "eth0").is_object(),
            "containerd's eth0"
        );
        let written = node
            .wait_for_pod_annotation(
                &name,
                NETWORK_STATUS_ANNOTATION,
                "the pod's network-status lists net1",
                |value| value.is_some_and(|v| v.contains("\"net1\"")),
            )
            .await
            .unwrap()
            .unwrap();
        let listed = network_status_interfaces(&written, |network| network == "macnet");
        let in_pod = pod_interfaces(&node, &pod);
        assert_eq!(listed.keys().collect::<Vec<_>>(), ["net1"], "{written}");
        assert_eq!(listed["net1"], in_pod["net1"], "{written}");
        running.push((name, claim, pod));
    }
    node.in_pod(&running[0].2, "ping", &["-c", "1", "-W", "2", "192.0.2.83"])
        .unwrap();

    // The scheduler would not allocate a fourth child; the driver refuses one as well.
    let over = node
        .allocate(
            &[macvlan_child("shared-3", "192.0.2.84/24")],
            "shared-3",
            &uid(33),
        )
        .await
        .unwrap();
    let outcome = node.prepare(std::slice::from_ref(&over)).await.unwrap();
    let error = &outcome[&over.uid].error;
    assert!(error.contains("netclaim.dev/children"), "{error}");

    for (name, claim, pod) in running {
        node.delete_pod(pod).await.unwrap();
        node.wait_for_pod_annotation(
            &name,
            NETWORK_STATUS_ANNOTATION,
            "net1 is withdrawn from network-status",
            |value| value.is_none_or(|v| !v.contains("\"net1\"")),
        )
        .await
        .unwrap();
        unprepare_cleanly(&node, claim).await;
    }
    assert_eq!(claims_in_checkpoint(&node), json!({}));
    // containerd's own CNI made its bridge (ncbr0) for the pods' eth0 on the way.
    let mut links_after = node.node_link_names().unwrap();
    links_after.retain(|name| name != "ncbr0");
    assert_eq!(links_after, links_before, "a child leaked");
}
