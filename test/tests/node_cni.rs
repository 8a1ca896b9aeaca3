//! CNI mode on a node, through the real `netclaim` binary with the NRI runtime stand-in:
//! a claim whose config carries an inline CNI network gets its interface from the Debian
//! CNI plugins (`/usr/lib/cni`), run by netclaim's RUN hook in the pod's netns; the
//! claimed NIC stays on the node as the parent.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use netclaim_test::node::checks::has_addr;
use netclaim_test::node::{NicClaim, NodeOptions, TestNode, TestPod};
use serde_json::{Value, json};

fn uid(n: u32) -> String {
    format!(
        "00000000-0000-4000-8000-{:012x}",
        u64::from(n) + u64::from(std::process::id()) * 1000 + 500
    )
}

/// A claim of `eth1` with a macvlan network (master substituted from the device) and a
/// static address.
fn macvlan_claim(name: &str, address: &str, mode: &str) -> NicClaim {
    NicClaim {
        name: name.into(),
        request: "nic".into(),
        if_name: "eth1".into(),
        config: Some(json!({
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "interface": {"name": "net1"},
            "cni": {
                "cniVersion": "1.0.0", "name": "macnet",
                "plugins": [{"type": "macvlan", "mode": mode,
                             "ipam": {"type": "static", "addresses": [{"address": address}]}}]
            }
        })),
    }
}

fn pod_addrs(node: &TestNode, pod: &TestPod) -> Vec<Value> {
    let out = node.in_pod(pod, "ip", &["-j", "-d", "addr"]).unwrap();
    serde_json::from_str(&out).unwrap()
}

/// The pod's `net1`, which must be a macvlan.
fn net1(node: &TestNode, pod: &TestPod) -> Value {
    pod_addrs(node, pod)
        .into_iter()
        .find(|l| l["ifname"] == "net1")
        .unwrap_or_else(|| panic!("no net1 in pod {}", pod.name))
}

fn cache_files(node: &TestNode) -> Vec<String> {
    match std::fs::read_dir(node.state_dir().join("cni-cache")) {
        Ok(dir) => dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn start() -> TestNode {
    let node = TestNode::start(NodeOptions::default()).await.unwrap();
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    node
}

#[tokio::test(flavor = "multi_thread")]
async fn cni_claim_gets_a_macvlan_on_the_nic_which_stays_on_the_node() {
    let mut node = start().await;
    let pod_uid = uid(1);
    let claim = node
        .allocate(
            &[macvlan_claim("cni-a", "192.0.2.50/24", "bridge")],
            "cni",
            &pod_uid,
        )
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    let stored = node.checkpoint().unwrap()["data"]["claims"][&claim.uid]["nics"][0]["cni"].clone();
    assert_eq!(stored["plugins"][0]["master"], "eth1", "{stored}");

    let pod = node.run_pod("cni", &pod_uid).await.unwrap().unwrap();
    let link = net1(&node, &pod);
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan", "{link}");
    assert!(has_addr(&link, "192.0.2.50/24"), "{link}");
    assert!(node.node_link("eth1").is_ok(), "eth1 left the node");
    assert_eq!(cache_files(&node).len(), 1, "{:?}", cache_files(&node));

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let data = loop {
        let status = node.claim("cni-a").await.unwrap().status;
        let device = status.and_then(|s| s.devices).unwrap_or_default().pop();
        if let Some(data) = device.and_then(|d| d.network_data) {
            break data;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no networkData written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(data.interface_name.as_deref(), Some("net1"));
    assert_eq!(
        data.ips.unwrap_or_default(),
        vec!["192.0.2.50/24".to_owned()]
    );

    node.delete_pod(pod).await.unwrap();
    assert_eq!(
        cache_files(&node),
        Vec::<String>::new(),
        "CNI cache entry left"
    );
    assert!(node.node_link("eth1").is_ok());
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
    assert_eq!(node.checkpoint().unwrap()["data"]["claims"], json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_share_one_parent_nic_each_with_its_own_macvlan() {
    let mut node = start().await;
    let (uid_a, uid_b) = (uid(2), uid(3));
    let a = node
        .allocate(
            &[macvlan_claim("share-a", "192.0.2.51/24", "bridge")],
            "pa",
            &uid_a,
        )
        .await
        .unwrap();
    let b = node
        .allocate(
            &[macvlan_claim("share-b", "192.0.2.52/24", "bridge")],
            "pb",
            &uid_b,
        )
        .await
        .unwrap();
    let prepared = node.prepare(&[a.clone(), b.clone()]).await.unwrap();
    assert!(
        prepared.values().all(|o| o.error.is_empty()),
        "{prepared:?}"
    );
    let pod_a = node.run_pod("pa", &uid_a).await.unwrap().unwrap();
    let pod_b = node.run_pod("pb", &uid_b).await.unwrap().unwrap();
    let (link_a, link_b) = (net1(&node, &pod_a), net1(&node, &pod_b));
    assert!(has_addr(&link_a, "192.0.2.51/24"), "{link_a}");
    assert!(has_addr(&link_b, "192.0.2.52/24"), "{link_b}");
    assert_ne!(link_a["address"], link_b["address"]);
    // Both macvlans sit on eth1 in bridge mode: they reach each other.
    node.in_pod(&pod_a, "ping", &["-c", "1", "-W", "2", "192.0.2.52"])
        .unwrap();
    node.delete_pod(pod_a).await.unwrap();
    node.delete_pod(pod_b).await.unwrap();
    assert_eq!(cache_files(&node), Vec::<String>::new());
    let unprepared = node.unprepare(&[a, b]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_plugin_fails_the_sandbox_with_the_plugins_message() {
    let mut node = start().await;
    let pod_uid = uid(4);
    // Valid for netclaim (plugin fields are the plugin's business), refused by macvlan.
    let claim = node
        .allocate(
            &[macvlan_claim("cni-bad", "192.0.2.53/24", "sideways")],
            "bad",
            &pod_uid,
        )
        .await
        .unwrap();
    assert_eq!(
        node.prepare(std::slice::from_ref(&claim)).await.unwrap()[&claim.uid].error,
        ""
    );
    let error = node.run_pod("bad", &pod_uid).await.unwrap().unwrap_err();
    assert!(error.contains("sideways"), "{error}");
    assert!(error.contains("macnet"), "{error}");
    assert!(node.node_link("eth1").is_ok());
    assert_eq!(cache_files(&node), Vec::<String>::new());
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_attachment_definition_reference_is_refused_at_prepare_for_now() {
    let node = start().await;
    let claim = node
        .allocate(
            &[NicClaim {
                name: "cni-nad".into(),
                request: "nic".into(),
                if_name: "eth1".into(),
                config: Some(json!({
                    "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
                    "cni": {"networkAttachmentDefinition": {"name": "macnet"}}
                })),
            }],
            "nad",
            &uid(5),
        )
        .await
        .unwrap();
    let outcome = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    let error = &outcome[&claim.uid].error;
    assert!(
        error.contains("cni.networkAttachmentDefinition") && error.contains("macnet"),
        "{error}"
    );
}
