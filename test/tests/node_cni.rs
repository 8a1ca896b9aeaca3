//! CNI mode on a node, through the real `netclaim` binary with the NRI runtime stand-in:
//! a claim whose config carries an inline CNI network gets its interface from the Debian
//! CNI plugins (`/usr/lib/cni`), run by netclaim's RUN hook in the pod's netns; the
//! claimed NIC stays on the node as the parent. The network may also come from a
//! NetworkAttachmentDefinition in the API server stand-in, read at prepare.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use netclaim::network_status::NETWORK_STATUS_ANNOTATION;
use netclaim_test::apiserver::ApiServerOptions;
use netclaim_test::node::checks::{has_addr, network_status_interfaces, pod_interfaces};
use netclaim_test::node::{NicClaim, NodeOptions, TestNode, TestPod};
use serde_json::{Value, json};

fn uid(n: u32) -> String {
    format!(
        "00000000-0000-4000-8000-{:012x}",
        u64::from(n) + u64::from(std::process::id()) * 1000 + 500
    )
}

/// A claim of `eth1` under a class whose network is a macvlan (master substituted from the
/// device) with static IPAM; the class lets the claim pick the interface name and its
/// address, which the claim sets in `cni.pluginOverrides`.
fn macvlan_claim(name: &str, address: &str, mode: &str) -> NicClaim {
    NicClaim {
        name: name.into(),
        request: "nic".into(),
        if_name: "eth1".into(),
        config: Some(json!({
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "interface": {"name": "net1"},
            "cni": {"pluginOverrides": {"plugins[0].ipam.addresses": [{"address": address}]}}
        })),
        class_config: Some(json!({
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "cni": {
                "cniVersion": "1.0.0", "name": "macnet",
                "plugins": [{"type": "macvlan", "mode": mode, "ipam": {"type": "static"}}],
                "claimMayOverride": ["interfaceName", "plugins[0].ipam.addresses"]
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
    let stored = node.prepared_claims().unwrap()[&claim.uid]["nics"][0]["cni"].clone();
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
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
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

/// A claim of `eth1` whose network is NetworkAttachmentDefinition `name` of the claim's
/// namespace, under a class that lets claims name one there.
fn nad_claim(claim: &str, name: &str) -> NicClaim {
    NicClaim {
        name: claim.into(),
        request: "nic".into(),
        if_name: "eth1".into(),
        config: Some(json!({
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "interface": {"name": "net1"},
            "cni": {"networkAttachmentDefinition": {"name": name}}
        })),
        class_config: Some(json!({
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "cni": {"claimMayBring": {"networkAttachmentDefinition": {}}}
        })),
    }
}

fn nads(node: &TestNode) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    );
    Api::namespaced_with(node.api.client(), "default", &resource)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_attachment_definition_gives_the_pod_its_macvlan() {
    let mut node = start().await;
    let config = json!({
        "cniVersion": "1.0.0", "name": "macnet-nad",
        "plugins": [{"type": "macvlan", "mode": "bridge",
                     "ipam": {"type": "static", "addresses": [{"address": "192.0.2.70/24"}]}}]
    });
    let nad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "macnet", "namespace": "default"},
        "spec": {"config": config.to_string()}
    }))
    .unwrap();
    nads(&node)
        .create(&PostParams::default(), &nad)
        .await
        .unwrap();
    let links_before = node.node_link_names().unwrap();
    let pod_uid = uid(5);
    let claim = node
        .allocate(&[nad_claim("cni-nad", "macnet")], "nad", &pod_uid)
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    let stored = node.prepared_claims().unwrap()[&claim.uid]["nics"][0].clone();
    assert_eq!(stored["cni"]["name"], "macnet-nad", "{stored}");
    assert_eq!(stored["cni"]["plugins"][0]["master"], "eth1", "{stored}");
    assert_eq!(stored["networkAttachmentDefinition"], "default/macnet");

    // Attach runs the list stored at prepare: the NAD is not read again.
    nads(&node)
        .delete("macnet", &DeleteParams::default())
        .await
        .unwrap();
    let pod = node.run_pod("nad", &pod_uid).await.unwrap().unwrap();
    let link = net1(&node, &pod);
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan", "{link}");
    assert!(has_addr(&link, "192.0.2.70/24"), "{link}");
    assert!(node.node_link("eth1").is_ok(), "eth1 left the node");
    assert_eq!(cache_files(&node).len(), 1, "{:?}", cache_files(&node));

    node.delete_pod(pod).await.unwrap();
    assert_eq!(
        cache_files(&node),
        Vec::<String>::new(),
        "CNI cache entry left"
    );
    assert_eq!(node.node_link_names().unwrap(), links_before);
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_network_attachment_definition_fails_prepare_naming_it() {
    let node = start().await;
    let claim = node
        .allocate(&[nad_claim("cni-nad-missing", "absent")], "nad", &uid(6))
        .await
        .unwrap();
    let outcome = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    let error = &outcome[&claim.uid].error;
    assert!(
        error.starts_with(
            "claim default/cni-nad-missing: claim config[0] (requests [nic]): \
             cni.networkAttachmentDefinition: default/absent: not found"
        ),
        "{error}"
    );
    // Nothing stored (a driver that never saved has no checkpoint file yet).
    let stored = node.prepared_claims().unwrap();
    assert_eq!(stored, json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cni_result_lands_in_the_claim_status_and_the_pods_network_status() {
    let mut node = start().await;
    let primary = r#"[{"name":"cbr0","interface":"eth0","ips":["198.51.100.6"],"default":true}]"#;
    let pod_uid = node
        .create_pod_object("cni-status", json!({ NETWORK_STATUS_ANNOTATION: primary }))
        .await
        .unwrap();
    let claim = node
        .allocate(
            &[macvlan_claim("cni-status", "192.0.2.60/24", "bridge")],
            "cni-status",
            &pod_uid,
        )
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    let pod = node.run_pod("cni-status", &pod_uid).await.unwrap().unwrap();

    // The pod's annotation: the CNI network's entry, matching the pod's netns exactly.
    let ours = |name: &str| name == "macnet";
    let written = node
        .wait_for_pod_annotation(
            "cni-status",
            NETWORK_STATUS_ANNOTATION,
            "the CNI network's entry is in the annotation",
            |value| value.is_some_and(|v| !network_status_interfaces(v, ours).is_empty()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        network_status_interfaces(&written, ours),
        pod_interfaces(&node, &pod),
        "{written}"
    );
    let entries: Vec<Value> = serde_json::from_str(&written).unwrap();
    assert_eq!(entries.len(), 2, "{written}");
    assert_eq!(
        entries[0]["name"], "cbr0",
        "the primary entry is kept: {written}"
    );

    // The claim's status.devices[].data: the CNI ADD result.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let data = loop {
        let status = node.claim("cni-status").await.unwrap().status;
        let device = status.and_then(|s| s.devices).unwrap_or_default().pop();
        if let Some(data) = device.and_then(|d| d.data) {
            break data.0;
        }
        assert!(std::time::Instant::now() < deadline, "no data written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mac = net1(&node, &pod)["address"].clone();
    let interface = data["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "net1")
        .unwrap_or_else(|| panic!("no net1 in {data}"));
    assert_eq!(interface["mac"], mac, "{data}");
    assert_eq!(data["ips"][0]["address"], "192.0.2.60/24", "{data}");

    node.delete_pod(pod).await.unwrap();
    let after = node
        .wait_for_pod_annotation(
            "cni-status",
            NETWORK_STATUS_ANNOTATION,
            "the CNI network's entry is gone after the pod stopped",
            |value| value.is_some_and(|v| network_status_interfaces(v, ours).is_empty()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&after).unwrap(),
        serde_json::from_str::<Value>(primary).unwrap()
    );
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}

/// `--shared-filter` makes `eth1` a shared parent with `--shared-children 2`: it is
/// published with consumable capacity, two pods get a macvlan child each, a third claim is
/// refused at prepare with the capacity named, and fits once a child is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_shared_parent_takes_children_up_to_its_capacity() {
    let options = NodeOptions {
        extra_args: vec![
            "--shared-filter".into(),
            r#"device.attributes["netclaim.dev"].ifName == "eth1""#.into(),
            "--shared-children".into(),
            "2".into(),
        ],
        // Shared NICs are published with consumable capacity: on by default from 1.36.
        api: ApiServerOptions::kubernetes(36),
        ..NodeOptions::default()
    };
    let mut node = TestNode::start(options).await.unwrap();
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let published = node.published_device("eth1").await.unwrap();
    assert_eq!(published.allow_multiple_allocations, Some(true));
    let capacity = &published.capacity.clone().unwrap_or_default()["netclaim.dev/children"];
    assert_eq!(capacity.value.0, "2");
    let eth2 = node.published_device("eth2").await.unwrap();
    assert_eq!(eth2.allow_multiple_allocations, None);

    let uids = [uid(11), uid(12), uid(13)];
    let mut claims = Vec::new();
    for (n, pod_uid) in uids.iter().enumerate() {
        let address = format!("192.0.2.{}/24", 61 + n);
        let claim = node
            .allocate(
                &[macvlan_claim(&format!("shared-{n}"), &address, "bridge")],
                &format!("p{n}"),
                pod_uid,
            )
            .await
            .unwrap();
        claims.push(claim);
    }
    let prepared = node.prepare(&claims[..2]).await.unwrap();
    assert!(
        prepared.values().all(|o| o.error.is_empty()),
        "{prepared:?}"
    );
    for claim in &claims[..2] {
        let stored = &node.prepared_claims().unwrap()[&claim.uid]["nics"][0];
        assert!(stored["shareId"].is_string(), "no share id: {stored}");
    }
    let over = node.prepare(&claims[2..]).await.unwrap();
    let error = &over[&claims[2].uid].error;
    assert!(
        error.contains("over capacity") && error.contains("netclaim.dev/children"),
        "{error}"
    );
    assert!(error.contains("default/shared-0"), "{error}");

    let pod_a = node.run_pod("p0", &uids[0]).await.unwrap().unwrap();
    let pod_b = node.run_pod("p1", &uids[1]).await.unwrap().unwrap();
    let (link_a, link_b) = (net1(&node, &pod_a), net1(&node, &pod_b));
    assert_eq!(link_a["linkinfo"]["info_kind"], "macvlan", "{link_a}");
    assert!(has_addr(&link_a, "192.0.2.61/24"), "{link_a}");
    assert!(has_addr(&link_b, "192.0.2.62/24"), "{link_b}");
    node.in_pod(&pod_a, "ping", &["-c", "1", "-W", "2", "192.0.2.62"])
        .unwrap();

    // The first pod goes, its claim is unprepared: the third claim fits now.
    node.delete_pod(pod_a).await.unwrap();
    let unprepared = node.unprepare(&claims[..1]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
    let retried = node.prepare(&claims[2..]).await.unwrap();
    assert_eq!(retried[&claims[2].uid].error, "");
    let pod_c = node.run_pod("p2", &uids[2]).await.unwrap().unwrap();
    assert!(has_addr(&net1(&node, &pod_c), "192.0.2.63/24"));
    assert!(node.node_link("eth1").is_ok(), "eth1 left the node");

    node.delete_pod(pod_b).await.unwrap();
    node.delete_pod(pod_c).await.unwrap();
    assert_eq!(cache_files(&node), Vec::<String>::new());
    let unprepared = node.unprepare(&claims[1..]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}
