//! netclaim as a PodNetwork provider, end to end on a node in namespaces: the API server
//! stand-in serves the PodNetwork CRD netclaim ships (installed from
//! `examples/install/podnetwork-crd.yaml`), the real `netclaim controller` writes the
//! conditions, the real `netclaim run` publishes each device's network, and the kubelet
//! and NRI stand-ins prepare claims and run pods.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use netclaim::network_status::NETWORK_STATUS_ANNOTATION;
use netclaim_test::node::checks::{config, has_addr, nic, pod_link};
use netclaim_test::node::{NodeOptions, TestNode};
use netclaim_test::podnetwork::{
    Controller, create, install_crd, network_of, patch_spec, selects, wait_for_condition,
};
use serde_json::json;

fn uid(n: u32) -> String {
    format!(
        "00000000-0000-4000-8000-{:012x}",
        u64::from(n) + u64::from(std::process::id()) * 1000
    )
}

/// A node with `nics` NICs, the CRD installed and the controller running.
async fn start(nics: usize) -> (TestNode, Controller) {
    let node = TestNode::start(NodeOptions {
        nics,
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    install_crd(node.api.client()).await.unwrap();
    let controller = Controller::start(&node.api).unwrap();
    (node, controller)
}

/// Waits until the device published for `if_name` has `network` as its `podNetwork`.
async fn wait_for_network(node: &TestNode, if_name: &str, network: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let device = node.published_device(if_name).await.unwrap();
        if network_of(&device).as_deref() == network {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{if_name} never got podNetwork {network:?}: {device:?}; driver log:\n{}",
            node.driver_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ready_network_labels_its_devices_and_disabling_it_withdraws_only_free_ones() {
    let (mut node, controller) = start(2).await;
    let client = node.api.client();
    // The proof of concept's parameter (an interface name) and a CEL selector.
    create(
        client.clone(),
        "blue",
        json!({"provider": "netclaim.dev", "parameters": {"name": "eth1"}}),
    )
    .await
    .unwrap();
    create(
        client.clone(),
        "red",
        json!({"provider": "netclaim.dev",
               "parameters": {"devices": "device.attributes[\"netclaim.dev\"].ifName == \"eth2\""}}),
    )
    .await
    .unwrap();
    // Another provider's network selecting everything is none of netclaim's business.
    create(
        client.clone(),
        "elsewhere",
        json!({"provider": "other.example.com", "parameters": {"devices": "true"}}),
    )
    .await
    .unwrap();
    for name in ["blue", "red"] {
        let ready = wait_for_condition(client.clone(), name, "Ready", "True", &controller)
            .await
            .unwrap();
        assert_eq!(ready.reason, "Ready");
    }
    wait_for_network(&node, "eth1", Some("blue")).await;
    wait_for_network(&node, "eth2", Some("red")).await;
    let other: netclaim::podnetwork::PodNetwork = kube::Api::all(client.clone())
        .get("elsewhere")
        .await
        .unwrap();
    assert!(
        other.status.is_none(),
        "another provider's network was written: {other:?}"
    );

    // eth1 goes into a pod.
    let pod_uid = uid(1);
    let claim = node
        .allocate(&[nic("on-blue", "eth1", None)], "web", &pod_uid)
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    let pod = node.run_pod("web", &pod_uid).await.unwrap().unwrap();

    // Disabled: the free device loses the attribute, the one in the pod keeps it.
    for name in ["blue", "red"] {
        patch_spec(client.clone(), name, json!({"enabled": false}))
            .await
            .unwrap();
        let ready = wait_for_condition(client.clone(), name, "Ready", "False", &controller)
            .await
            .unwrap();
        assert_eq!(ready.reason, "AdministrativelyDisabled");
    }
    wait_for_network(&node, "eth2", None).await;
    let held = node.published_device("eth1").await.unwrap();
    assert_eq!(network_of(&held).as_deref(), Some("blue"), "{held:?}");

    // A claim allocated on red before the withdrawal reached the scheduler is refused.
    let late = node
        .allocate(&[nic("on-red", "eth2", None)], "late", &uid(2))
        .await
        .unwrap();
    let refused = node.prepare(std::slice::from_ref(&late)).await.unwrap();
    let error = &refused[&late.uid].error;
    assert!(
        error.contains("claim default/on-red:")
            && error.contains(
                "belongs to PodNetwork red, which is not Ready (AdministrativelyDisabled"
            ),
        "{error}"
    );

    // The pod's device comes back: now it is free, and withdrawn too.
    node.delete_pod(pod).await.unwrap();
    node.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    wait_for_network(&node, "eth1", None).await;

    // Enabled again, deleted: the attribute comes and goes.
    patch_spec(client.clone(), "red", json!({"enabled": true}))
        .await
        .unwrap();
    wait_for_network(&node, "eth2", Some("red")).await;
    kube::Api::<netclaim::podnetwork::PodNetwork>::all(client.clone())
        .delete("red", &Default::default())
        .await
        .unwrap();
    wait_for_network(&node, "eth2", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_parameters_make_a_network_not_ready_naming_the_field() {
    let (node, controller) = start(1).await;
    let client = node.api.client();
    let cases = [
        (
            "bad-cel",
            json!({"devices": "device.attributes[\"netclaim.dev\"].ifName =="}),
            "spec.parameters.devices: ",
        ),
        (
            "typo",
            json!({"nmae": "eth1"}),
            "spec.parameters.nmae: unknown field",
        ),
        (
            "bad-address",
            json!({"name": "eth1", "config": {
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "interface": {"addresses": ["192.0.2.300/24"]}}}),
            "spec.parameters.config.interface.addresses[0]: ",
        ),
        ("nothing", json!({}), "spec.parameters: say which devices"),
    ];
    for (name, parameters, _) in &cases {
        create(
            client.clone(),
            name,
            json!({"provider": "netclaim.dev", "parameters": parameters}),
        )
        .await
        .unwrap();
    }
    for (name, _, expected) in &cases {
        let accepted = wait_for_condition(client.clone(), name, "Accepted", "False", &controller)
            .await
            .unwrap();
        assert_eq!(accepted.reason, "InvalidParameters", "{name}");
        assert!(
            accepted.message.starts_with(expected),
            "{name}: {}",
            accepted.message
        );
        let ready = wait_for_condition(client.clone(), name, "Ready", "False", &controller)
            .await
            .unwrap();
        assert_eq!(ready.reason, "ConditionsNotReady", "{name}");
        assert!(
            ready
                .message
                .starts_with(&format!("Accepted is False: {expected}")),
            "{name}: {}",
            ready.message
        );
    }
    // Fixed: Ready, and eth1 is published in the network.
    patch_spec(
        client.clone(),
        "typo",
        json!({"parameters": {"nmae": null, "name": "eth1"}}),
    )
    .await
    .unwrap();
    wait_for_condition(client.clone(), "typo", "Ready", "True", &controller)
        .await
        .unwrap();
    wait_for_network(&node, "eth1", Some("typo")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_two_networks_select_is_in_neither_and_both_say_why() {
    let (node, controller) = start(2).await;
    let client = node.api.client();
    create(
        client.clone(),
        "blue",
        json!({"provider": "netclaim.dev", "parameters": {"name": "eth1"}}),
    )
    .await
    .unwrap();
    create(
        client.clone(),
        "green",
        json!({"provider": "netclaim.dev",
               "parameters": {"devices": "device.attributes[\"netclaim.dev\"].ifName.startsWith(\"eth\")"}}),
    )
    .await
    .unwrap();
    let eth1 = node.device_for("eth1").await.unwrap();
    for (name, other) in [("blue", "green"), ("green", "blue")] {
        let conflicted =
            wait_for_condition(client.clone(), name, "Conflicted", "True", &controller)
                .await
                .unwrap();
        assert_eq!(conflicted.reason, "DevicesInOtherNetworks");
        assert!(
            conflicted
                .message
                .contains(&format!("{}/{eth1} (also in {other})", node.name)),
            "{name}: {}",
            conflicted.message
        );
        // Still Ready: its other devices are fine.
        wait_for_condition(client.clone(), name, "Ready", "True", &controller)
            .await
            .unwrap();
    }
    wait_for_network(&node, "eth2", Some("green")).await;
    wait_for_network(&node, "eth1", None).await;
    // The overlap removed: blue gets eth1, and the conflict clears on both.
    patch_spec(
        client.clone(),
        "green",
        json!({"parameters": {"devices": "device.attributes[\"netclaim.dev\"].ifName == \"eth2\""}}),
    )
    .await
    .unwrap();
    wait_for_network(&node, "eth1", Some("blue")).await;
    for name in ["blue", "green"] {
        let clear = wait_for_condition(client.clone(), name, "Conflicted", "False", &controller)
            .await
            .unwrap();
        assert_eq!(clear.reason, "NoConflicts");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_on_a_network_gets_its_config_and_reports_the_network() {
    let (mut node, controller) = start(1).await;
    let client = node.api.client();
    create(
        client.clone(),
        "blue-net",
        json!({"provider": "netclaim.dev", "parameters": {"name": "eth1", "config": {
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "interface": {"name": "blue0", "addresses": ["192.0.2.10/24"], "mtu": 1400}}}}),
    )
    .await
    .unwrap();
    wait_for_condition(client.clone(), "blue-net", "Ready", "True", &controller)
        .await
        .unwrap();
    wait_for_network(&node, "eth1", Some("blue-net")).await;
    // The class's selector of examples/podnetwork/blue-net.yaml picks the device.
    let device = node.published_device("eth1").await.unwrap();
    assert!(
        selects(
            "device.driver == \"netclaim.dev\" && has(device.attributes[\"netclaim.dev\"].podNetwork) \
             && device.attributes[\"netclaim.dev\"].podNetwork == \"blue-net\"",
            "netclaim.dev",
            &device
        )
        .unwrap()
    );

    let pod_uid = node.create_pod_object("on-blue", json!({})).await.unwrap();
    // The claim refines the network's config: its MTU wins, the rest is the network's.
    let claim = node
        .allocate(
            &[nic(
                "blue-claim",
                "eth1",
                Some(config(json!({"mtu": 1500}))),
            )],
            "on-blue",
            &pod_uid,
        )
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    let pod = node.run_pod("on-blue", &pod_uid).await.unwrap().unwrap();
    let link = pod_link(&node, &pod, "blue0");
    assert!(has_addr(&link, "192.0.2.10/24"), "{link}");
    assert_eq!(link["mtu"], 1500);

    node.wait_for_ready_reason("blue-claim", "NetworkReady")
        .await
        .unwrap();
    let status = serde_json::to_value(node.claim("blue-claim").await.unwrap().status).unwrap();
    let entry = &status["devices"][0];
    assert_eq!(entry["data"], json!({"podNetwork": "blue-net"}), "{status}");
    assert_eq!(entry["networkData"]["interfaceName"], "blue0", "{status}");

    let annotation = node
        .wait_for_pod_annotation("on-blue", NETWORK_STATUS_ANNOTATION, "blue0 listed", |v| {
            v.is_some_and(|v| v.contains("blue0"))
        })
        .await
        .unwrap()
        .unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&annotation).unwrap();
    let blue = entries.iter().find(|e| e["interface"] == "blue0").unwrap();
    assert_eq!(blue["name"], "blue-net", "{annotation}");
    assert_eq!(blue["ips"], json!(["192.0.2.10"]), "{annotation}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_multi_network_proof_of_concept_samples_work_with_the_provider_renamed() {
    let (node, controller) = start(2).await;
    let client = node.api.client();
    // The samples want an interface named dummy0 (no dummy module here: a veth renamed).
    node.ip(&["link", "set", "eth2", "down"]).unwrap();
    node.ip(&["link", "set", "eth2", "name", "dummy0"]).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/podnetwork/multi-network-poc.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let network: netclaim::podnetwork::PodNetwork =
        serde_json::from_value(docs[0].clone()).unwrap();
    kube::Api::<netclaim::podnetwork::PodNetwork>::all(client.clone())
        .create(&Default::default(), &network)
        .await
        .unwrap();
    wait_for_condition(
        client.clone(),
        "my-dummy-network",
        "Ready",
        "True",
        &controller,
    )
    .await
    .unwrap();
    wait_for_network(&node, "dummy0", Some("my-dummy-network")).await;
    // The scheduler's view: the class and the claim's selector pick dummy0's device only.
    let class_selector = docs[1]["spec"]["selectors"][0]["cel"]["expression"]
        .as_str()
        .unwrap();
    let claim_selector =
        docs[2]["spec"]["devices"]["requests"][0]["exactly"]["selectors"][0]["cel"]["expression"]
            .as_str()
            .unwrap();
    for (if_name, wanted) in [("dummy0", true), ("eth1", false)] {
        let device = node.published_device(if_name).await.unwrap();
        let picked = selects(class_selector, "netclaim.dev", &device).unwrap()
            && selects(claim_selector, "netclaim.dev", &device).unwrap();
        assert_eq!(picked, wanted, "{if_name}: {device:?}");
    }
    let pod_uid = uid(7);
    let claim = node
        .allocate(
            &[nic("dummy-network-interface", "dummy0", None)],
            "test-pod-using-podnetwork",
            &pod_uid,
        )
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
}

/// Whether PodNetwork `name` still exists.
async fn exists(client: kube::Client, name: &str) -> bool {
    match kube::Api::<netclaim::podnetwork::PodNetwork>::all(client)
        .get_opt(name)
        .await
    {
        Ok(found) => found.is_some(),
        Err(error) => panic!("reading PodNetwork {name}: {error}"),
    }
}

/// Waits (at most 20 s) until PodNetwork `name` is gone.
async fn wait_until_gone(client: kube::Client, name: &str, controller: &Controller) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while exists(client.clone(), name).await {
        assert!(
            Instant::now() < deadline,
            "{name} was kept; controller log:\n{}",
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_in_use_is_deleted_only_after_its_last_claim_is_gone() {
    let (mut node, controller) = start(2).await;
    let client = node.api.client();
    let networks = kube::Api::<netclaim::podnetwork::PodNetwork>::all(client.clone());
    for (name, nic) in [("blue", "eth1"), ("spare", "eth2")] {
        create(
            client.clone(),
            name,
            json!({"provider": "netclaim.dev", "parameters": {"name": nic}}),
        )
        .await
        .unwrap();
        let in_use = wait_for_condition(client.clone(), name, "InUse", "False", &controller)
            .await
            .unwrap();
        assert_eq!(in_use.reason, "NoClaims");
    }
    wait_for_network(&node, "eth1", Some("blue")).await;
    let finalizers = networks.get("blue").await.unwrap().metadata.finalizers;
    assert_eq!(
        finalizers,
        Some(vec!["netclaim.dev/pod-network-in-use".to_owned()])
    );

    // Allocated: in use before any node prepared it.
    let pod_uid = uid(30);
    let claim = node
        .allocate(&[nic("on-blue", "eth1", None)], "web", &pod_uid)
        .await
        .unwrap();
    let in_use = wait_for_condition(client.clone(), "blue", "InUse", "True", &controller)
        .await
        .unwrap();
    assert_eq!(in_use.reason, "ClaimsHoldDevices");
    assert!(
        in_use.message.ends_with(": default/on-blue"),
        "{}",
        in_use.message
    );
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    let pod = node.run_pod("web", &pod_uid).await.unwrap().unwrap();

    // Deleted while in use: the object stays, takes no new claims, and says why it stays.
    // The free network goes at once.
    for name in ["blue", "spare"] {
        networks.delete(name, &Default::default()).await.unwrap();
    }
    let ready = wait_for_condition(client.clone(), "blue", "Ready", "False", &controller)
        .await
        .unwrap();
    assert_eq!(ready.reason, "Deleting");
    let in_use = wait_for_condition(client.clone(), "blue", "InUse", "True", &controller)
        .await
        .unwrap();
    assert!(
        in_use.message.starts_with("the deletion waits"),
        "{}",
        in_use.message
    );
    assert!(exists(client.clone(), "blue").await);
    wait_for_network(&node, "eth2", None).await;
    wait_until_gone(client.clone(), "spare", &controller).await;
    // The pod's device keeps its network: it is in a pod, republished as it was.
    let held = node.published_device("eth1").await.unwrap();
    assert_eq!(network_of(&held).as_deref(), Some("blue"), "{held:?}");

    // The pod ends, the claim is unprepared and deleted: the network goes.
    node.delete_pod(pod).await.unwrap();
    node.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    assert!(
        exists(client.clone(), "blue").await,
        "the claim is still allocated"
    );
    kube::Api::<k8s_openapi::api::resource::v1::ResourceClaim>::namespaced(
        client.clone(),
        &claim.namespace,
    )
    .delete(&claim.name, &Default::default())
    .await
    .unwrap();
    wait_until_gone(client.clone(), "blue", &controller).await;
    wait_for_network(&node, "eth1", None).await;
}
