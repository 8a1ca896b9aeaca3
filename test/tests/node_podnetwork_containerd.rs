//! A pod gets its NIC through a PodNetwork on a real containerd (1.7 or 2.x, as
//! `NETCLAIM_CONTAINERD_MAJOR` chooses; `hack/test.sh` runs this file on both): the CRD
//! netclaim ships is installed in the API server stand-in, the real `netclaim controller`
//! makes the network Ready, the real `netclaim run` publishes the node's NIC in it, the
//! kubelet stand-in prepares the claim (with the network's CNI config merged under the
//! claim's), and containerd runs the pod through CRI, calling netclaim's NRI hook, which
//! runs the network's CNI plugins (macvlan + static) for the pod.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use netclaim::network_status::NETWORK_STATUS_ANNOTATION;
use netclaim_test::node::checks::{config, has_addr, nic, pod_link};
use netclaim_test::node::{NodeOptions, RuntimeKind, TestNode};
use netclaim_test::podnetwork::{Controller, create, install_crd, network_of, wait_for_condition};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_on_containerd_gets_its_nic_through_a_pod_network() {
    let mut node = TestNode::start(NodeOptions {
        runtime: RuntimeKind::Containerd,
        nics: 1,
        ..NodeOptions::default()
    })
    .await
    .unwrap_or_else(|error| panic!("{error:#}"));
    let client = node.api.client();
    install_crd(client.clone()).await.unwrap();
    let controller = Controller::start(&node.api).unwrap();
    create(
        client.clone(),
        "blue-net",
        json!({"provider": "netclaim.dev", "parameters": {"name": "eth1", "config": {
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "cni": {"cniVersion": "1.0.0", "name": "blue",
                    "plugins": [{"type": "macvlan", "mode": "bridge",
                                 "ipam": {"type": "static",
                                          "addresses": [{"address": "192.0.2.50/24"}]}}],
                    "claimMayOverride": ["interfaceName"]}}}}),
    )
    .await
    .unwrap();
    wait_for_condition(client.clone(), "blue-net", "Ready", "True", &controller)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let device = node.published_device("eth1").await.unwrap();
        if network_of(&device).as_deref() == Some("blue-net") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "eth1 never joined blue-net: {device:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pod_uid = node.create_pod_object("on-blue", json!({})).await.unwrap();
    let claim = node
        .allocate(
            &[nic("blue", "eth1", Some(config(json!({"name": "blue0"}))))],
            "on-blue",
            &pod_uid,
        )
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    let pod = node.run_pod("on-blue", &pod_uid).await.unwrap().unwrap();
    let blue0 = pod_link(&node, &pod, "blue0");
    assert_eq!(blue0["linkinfo"]["info_kind"], "macvlan", "{blue0}");
    assert!(has_addr(&blue0, "192.0.2.50/24"), "{blue0}");
    // containerd's own eth0 is still there.
    pod_link(&node, &pod, "eth0");

    node.wait_for_ready_reason("blue", "NetworkReady")
        .await
        .unwrap();
    let status = serde_json::to_value(node.claim("blue").await.unwrap().status).unwrap();
    let data = &status["devices"][0]["data"];
    assert_eq!(data["podNetwork"], "blue-net", "{status}");
    assert_eq!(
        data["cniVersion"], "1.0.0",
        "the CNI result stays readable: {status}"
    );
    let annotation = node
        .wait_for_pod_annotation("on-blue", NETWORK_STATUS_ANNOTATION, "blue0 listed", |v| {
            v.is_some_and(|v| v.contains("blue0"))
        })
        .await
        .unwrap()
        .unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&annotation).unwrap();
    let entry = entries.iter().find(|e| e["interface"] == "blue0").unwrap();
    assert_eq!(entry["name"], "blue-net", "{annotation}");

    node.delete_pod(pod).await.unwrap();
    let unprepared = node.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}
