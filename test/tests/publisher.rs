//! The ResourceSlice publisher against the API server stand-in.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubeletplugin::{
    DriverResources, Pool, PublishStatus, PublisherConfig, ResourceSlicePublisher,
};
use netclaim_test::apiserver::{ApiServer, ApiServerOptions};
use serde_json::json;
use tokio::sync::watch;

const DRIVER: &str = "netclaim.dev";
const NODE: &str = "node-a";

struct Fixture {
    server: ApiServer,
    slices: Api<ResourceSlice>,
    node_uid: String,
}

async fn fixture() -> Fixture {
    fixture_with(ApiServerOptions::default()).await
}

/// A fixture whose API server emulates `options` (a release, feature gates).
async fn fixture_with(options: ApiServerOptions) -> Fixture {
    let server = ApiServer::start_with(options).await.unwrap();
    let node: Node = serde_json::from_value(json!({ "metadata": { "name": NODE } })).unwrap();
    let node = Api::<Node>::all(server.client())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    let slices = Api::all(server.client());
    Fixture {
        server,
        slices,
        node_uid: node.metadata.uid.unwrap(),
    }
}

fn config() -> PublisherConfig {
    PublisherConfig {
        driver_name: DRIVER.into(),
        node_name: NODE.into(),
        node_uid: None,
    }
}

fn device(name: &str) -> Device {
    serde_json::from_value(json!({
        "name": name,
        "attributes": { "netclaim.dev/ifName": { "string": name } },
    }))
    .unwrap()
}

fn devices(prefix: &str, count: usize) -> Vec<Device> {
    (0..count)
        .map(|i| device(&format!("{prefix}{i}")))
        .collect()
}

fn resources(pools: &[(&str, Vec<Device>)]) -> DriverResources {
    DriverResources {
        pools: pools
            .iter()
            .map(|(name, devices)| (name.to_string(), Pool::new(devices.iter().cloned())))
            .collect(),
    }
}

/// Waits (bounded) until the publisher's status satisfies `done`.
async fn wait_status(
    status: &mut watch::Receiver<PublishStatus>,
    done: impl FnMut(&PublishStatus) -> bool,
) -> PublishStatus {
    let seen = tokio::time::timeout(Duration::from_secs(20), status.wait_for(done))
        .await
        .expect("publisher status reached in time")
        .expect("publisher alive");
    seen.clone()
}

/// Waits until one more successful sync than `after` has happened without an error.
async fn wait_synced(status: &mut watch::Receiver<PublishStatus>, after: u64) -> PublishStatus {
    wait_status(status, |s| {
        s.synced_generation > after && s.last_error.is_none()
    })
    .await
}

async fn node_slices(slices: &Api<ResourceSlice>) -> Vec<ResourceSlice> {
    let params =
        ListParams::default().fields(&format!("spec.nodeName={NODE},spec.driver={DRIVER}"));
    slices.list(&params).await.unwrap().items
}

/// Checks that a pool is published consistently: one generation, the right count, every
/// device exactly once, owned by the node. Returns the pool's generation.
fn assert_pool(all: &[ResourceSlice], pool: &str, expected: &[Device], node_uid: &str) -> i64 {
    let slices: Vec<&ResourceSlice> = all.iter().filter(|s| s.spec.pool.name == pool).collect();
    assert!(!slices.is_empty(), "pool {pool} published");
    let generation = slices[0].spec.pool.generation;
    let mut published = Vec::new();
    for slice in &slices {
        assert_eq!(
            slice.spec.pool.generation, generation,
            "one generation per pool"
        );
        assert_eq!(slice.spec.pool.resource_slice_count, slices.len() as i64);
        assert_eq!(slice.spec.driver, DRIVER);
        assert_eq!(slice.spec.node_name.as_deref(), Some(NODE));
        assert!(
            slice
                .metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with("node-a-netclaim.dev-")
        );
        let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", NODE, node_uid)
        );
        assert_eq!(owner.controller, Some(true));
        let devices = slice.spec.devices.clone().unwrap_or_default();
        assert!(devices.len() <= 128);
        published.extend(devices);
    }
    // The server fills in taint times; the desired devices have none.
    let key = |d: &Device| {
        let mut d = d.clone();
        for taint in d.taints.iter_mut().flatten() {
            taint.time_added = None;
        }
        serde_json::to_string(&d).unwrap()
    };
    let published: BTreeSet<String> = published.iter().map(key).collect();
    let expected: BTreeSet<String> = expected.iter().map(key).collect();
    assert_eq!(
        published, expected,
        "pool {pool} holds exactly the desired devices"
    );
    generation
}

fn write_count(server: &ApiServer) -> usize {
    let faults = server.faults();
    ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|m| faults.request_count(m, "resourceslices"))
        .sum()
}

/// Waits until the publisher has taken in every watch event sent before this call (its view
/// is then as new as the server's). A slice of a pool it does not publish comes after them
/// on its watch, and the publisher deletes it in a pass of its own: the synced count grows.
/// Costs one create (this test's) and one delete (the publisher's), and no read, so that
/// callers can count requests across it.
async fn watch_barrier(
    f: &Fixture,
    status: &mut watch::Receiver<PublishStatus>,
    synced: u64,
) -> u64 {
    let marker: ResourceSlice = serde_json::from_value(json!({
        "metadata": { "generateName": "barrier-" },
        "spec": { "driver": DRIVER, "nodeName": NODE,
                  "pool": { "name": "barrier", "generation": 1, "resourceSliceCount": 1 } }
    }))
    .unwrap();
    f.slices
        .create(&PostParams::default(), &marker)
        .await
        .unwrap();
    wait_synced(status, synced).await.synced_generation
}

#[tokio::test]
async fn publishes_and_does_not_rewrite_unchanged_resources() {
    let f = fixture().await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let desired = devices("eth", 3);
    publisher.update(resources(&[(NODE, desired.clone())]));
    let synced = wait_synced(&mut status, 0).await;

    let slices = node_slices(&f.slices).await;
    assert_eq!(slices.len(), 1);
    assert_eq!(assert_pool(&slices, NODE, &desired, &f.node_uid), 1);

    // The same resources again: confirmed, nothing written.
    let writes = write_count(&f.server);
    publisher.update(resources(&[(NODE, desired.clone())]));
    wait_synced(&mut status, synced.synced_generation).await;
    assert_eq!(write_count(&f.server), writes);
    assert_eq!(node_slices(&f.slices).await, slices);
    publisher.shutdown(false).await;
    assert_eq!(
        node_slices(&f.slices).await.len(),
        1,
        "shutdown(false) keeps slices"
    );
    f.server.shutdown().await;
}

#[tokio::test]
async fn device_churn_bumps_generation_and_converges() {
    let f = fixture().await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let mut current = devices("eth", 3);
    publisher.update(resources(&[(NODE, current.clone())]));
    let mut synced = wait_synced(&mut status, 0).await.synced_generation;
    let mut generation = assert_pool(&node_slices(&f.slices).await, NODE, &current, &f.node_uid);

    type Step = Box<dyn Fn(&mut Vec<Device>)>;
    let steps: Vec<Step> = vec![
        Box::new(|d| d.push(device("eth9"))),
        Box::new(|d| {
            d.remove(0);
        }),
        Box::new(|d| {
            d[0].attributes.as_mut().unwrap().insert(
                "netclaim.dev/mtu".into(),
                serde_json::from_value(json!({ "int": 9000 })).unwrap(),
            );
        }),
    ];
    for step in steps {
        step(&mut current);
        publisher.update(resources(&[(NODE, current.clone())]));
        synced = wait_synced(&mut status, synced).await.synced_generation;
        let slices = node_slices(&f.slices).await;
        assert_eq!(slices.len(), 1, "no orphan slices");
        let next = assert_pool(&slices, NODE, &current, &f.node_uid);
        assert!(
            next > generation,
            "generation bumped: {next} > {generation}"
        );
        generation = next;
    }
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

#[tokio::test]
async fn large_pools_are_split_and_shrink_back() {
    // Device taints are stored from 1.36 (DRADeviceTaints on by default).
    let f = fixture_with(ApiServerOptions::kubernetes(36)).await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let many = devices("d", 300);
    publisher.update(resources(&[(NODE, many.clone())]));
    let synced = wait_synced(&mut status, 0).await.synced_generation;
    let slices = node_slices(&f.slices).await;
    assert_eq!(slices.len(), 3);
    assert_pool(&slices, NODE, &many, &f.node_uid);

    // Devices with taints allow only 64 per slice.
    let mut tainted = devices("t", 100);
    tainted[5].taints = Some(vec![
        serde_json::from_value(json!({ "key": "netclaim.dev/down", "effect": "NoSchedule" }))
            .unwrap(),
    ]);
    publisher.update(resources(&[(NODE, tainted.clone())]));
    let synced = wait_synced(&mut status, synced).await.synced_generation;
    let slices = node_slices(&f.slices).await;
    assert_eq!(slices.len(), 2);
    assert_pool(&slices, NODE, &tainted, &f.node_uid);

    let few = devices("d", 10);
    publisher.update(resources(&[(NODE, few.clone())]));
    wait_synced(&mut status, synced).await;
    let slices = node_slices(&f.slices).await;
    assert_eq!(slices.len(), 1, "surplus slices deleted");
    assert_pool(&slices, NODE, &few, &f.node_uid);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

#[tokio::test]
async fn removed_pools_lose_their_slices() {
    let f = fixture().await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    publisher.update(resources(&[
        (NODE, devices("a", 2)),
        ("extra", devices("b", 200)),
    ]));
    let synced = wait_synced(&mut status, 0).await.synced_generation;
    assert_eq!(node_slices(&f.slices).await.len(), 3);

    publisher.update(resources(&[(NODE, devices("a", 2))]));
    wait_synced(&mut status, synced).await;
    let slices = node_slices(&f.slices).await;
    assert_eq!(slices.len(), 1);
    assert_pool(&slices, NODE, &devices("a", 2), &f.node_uid);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

#[tokio::test]
async fn slices_deleted_or_changed_by_others_are_repaired() {
    let f = fixture().await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let desired = devices("d", 200);
    publisher.update(resources(&[(NODE, desired.clone())]));
    let synced = wait_synced(&mut status, 0).await.synced_generation;
    let slices = node_slices(&f.slices).await;
    let generation = assert_pool(&slices, NODE, &desired, &f.node_uid);

    let victim = slices[0].metadata.name.clone().unwrap();
    f.slices
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let synced = wait_synced(&mut status, synced).await.synced_generation;
    let repaired = node_slices(&f.slices).await;
    assert_eq!(repaired.len(), 2);
    let after_delete = assert_pool(&repaired, NODE, &desired, &f.node_uid);
    assert!(after_delete > generation);

    let mut tampered = repaired[0].clone();
    tampered.spec.devices.as_mut().unwrap().pop();
    let name = tampered.metadata.name.clone().unwrap();
    f.slices
        .replace(&name, &PostParams::default(), &tampered)
        .await
        .unwrap();
    let synced = wait_synced(&mut status, synced).await.synced_generation;
    let repaired = node_slices(&f.slices).await;
    let after_tamper = assert_pool(&repaired, NODE, &desired, &f.node_uid);
    assert!(after_tamper > after_delete);

    // Even with every slice gone (as the kubelet does at start), generations keep growing.
    let all = ListParams::default().fields(&format!("spec.nodeName={NODE}"));
    f.slices
        .delete_collection(&DeleteParams::default(), &all)
        .await
        .unwrap();
    wait_synced(&mut status, synced).await;
    let republished = node_slices(&f.slices).await;
    assert!(assert_pool(&republished, NODE, &desired, &f.node_uid) > after_tamper);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

#[tokio::test]
async fn conflicts_and_server_errors_are_retried() {
    let f = fixture().await;
    let faults = f.server.faults();
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    publisher.update(resources(&[(NODE, devices("a", 2))]));
    let synced = wait_synced(&mut status, 0).await.synced_generation;

    faults.conflict_next("resourceslices", 2);
    // The reads of the slice after each conflict fail too.
    faults.fail_next("GET", "resourceslices", 2, 500);
    // 503s are retried inside the kube client as well as by the publisher.
    faults.fail_next("PUT", "resourceslices", 3, 503);
    let desired = devices("b", 3);
    publisher.update(resources(&[(NODE, desired.clone())]));
    wait_synced(&mut status, synced).await;
    assert_pool(&node_slices(&f.slices).await, NODE, &desired, &f.node_uid);
    assert!(faults.request_count("PUT", "resourceslices") >= 1 + 2 + 3);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

#[tokio::test]
async fn rejected_devices_are_reported_and_a_later_good_update_is_published() {
    let f = fixture().await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let mut bad = device("eth0");
    bad.attributes.as_mut().unwrap().insert(
        "not a valid name".into(),
        serde_json::from_value(json!({ "bool": true })).unwrap(),
    );
    publisher.update(resources(&[(NODE, vec![bad])]));
    let failed = wait_status(&mut status, |s| s.last_error.is_some()).await;
    let error = failed.last_error.unwrap();
    assert!(error.contains("attributes[not a valid name]"), "{error}");
    assert_eq!(failed.synced_generation, 0);
    assert!(node_slices(&f.slices).await.is_empty());

    // A good update afterwards is written at once (no waiting out the rejection's pause).
    let good = devices("eth", 1);
    publisher.update(resources(&[(NODE, good.clone())]));
    let synced = wait_synced(&mut status, 0).await;
    assert_eq!(synced.last_error, None);
    assert_pool(&node_slices(&f.slices).await, NODE, &good, &f.node_uid);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

fn tainted(mut device: Device, effect: &str) -> Device {
    device.taints = Some(vec![
        serde_json::from_value(json!({ "key": "netclaim.dev/down", "effect": effect })).unwrap(),
    ]);
    device
}

/// Publishes `desired` again and again, each time waiting for the pass it triggers (each
/// desired-state update makes the publisher run one full pass: compare with its view of
/// the slices, write what differs; the status proves the pass ran; its own writes' watch
/// events add passes on top). The period checked is bounded by events, not time.
async fn republish(
    publisher: &ResourceSlicePublisher,
    status: &mut watch::Receiver<PublishStatus>,
    desired: &DriverResources,
    mut synced: u64,
) -> u64 {
    const PASSES: usize = 5;
    for _ in 0..PASSES {
        publisher.update(desired.clone());
        synced = wait_synced(status, synced).await.synced_generation;
    }
    synced
}

/// The publisher must not rewrite slices because the server filled in a field it left
/// empty (the API server defaults a device taint's `timeAdded` to the time of the write):
/// every rewrite would be filled in again and trigger the next, a hot loop against the API
/// server.
#[tokio::test]
async fn a_field_the_server_fills_in_does_not_make_the_publisher_rewrite_in_a_loop() {
    let f = fixture_with(ApiServerOptions::kubernetes(37)).await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let mut devices = devices("eth", 2);
    devices[0] = tainted(devices[0].clone(), "NoSchedule");
    let desired = resources(&[(NODE, devices)]);
    publisher.update(desired.clone());
    let synced = wait_synced(&mut status, 0).await.synced_generation;
    let published = node_slices(&f.slices).await;
    assert_eq!(published.len(), 1);
    let stored = published[0].spec.devices.as_ref().unwrap()[0]
        .taints
        .as_ref()
        .unwrap();
    assert!(
        stored[0].time_added.is_some(),
        "the API server stand-in fills in timeAdded"
    );
    let writes = write_count(&f.server);
    assert_eq!(writes, 1, "one slice, one create");

    let synced = republish(&publisher, &mut status, &desired, synced).await;
    assert_eq!(
        write_count(&f.server),
        writes,
        "the publisher rewrote unchanged slices (generation now {synced})"
    );
    assert_eq!(node_slices(&f.slices).await, published);
    assert_eq!(status.borrow().dropped_fields, Vec::<String>::new());
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

/// An API server with a feature off drops that feature's fields from what it stores (as
/// the real strategies' `dropDisabledFields` do): 1.35 drops taints (`DRADeviceTaints`) and
/// the consumable-capacity fields (`DRAConsumableCapacity`). The publisher reports what was
/// dropped and takes the stored form as written: no rewrite loop, and still a rewrite when
/// the devices really change.
#[tokio::test]
async fn fields_the_server_drops_are_reported_and_not_rewritten_in_a_loop() {
    let f = fixture_with(ApiServerOptions::kubernetes(35)).await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let shared: Device = serde_json::from_value(json!({
        "name": "eth1",
        "allowMultipleAllocations": true,
        "capacity": { "netclaim.dev/children": {
            "value": "16", "requestPolicy": { "default": "1", "validValues": ["1"] } } },
    }))
    .unwrap();
    let desired = resources(&[(NODE, vec![tainted(device("eth0"), "NoExecute"), shared])]);
    publisher.update(desired.clone());
    let synced = wait_synced(&mut status, 0).await;
    assert_eq!(
        synced.dropped_fields,
        [
            "spec.devices[eth0].taints",
            "spec.devices[eth1].allowMultipleAllocations",
            "spec.devices[eth1].capacity.netclaim.dev/children.requestPolicy",
        ]
    );
    let published = node_slices(&f.slices).await;
    let stored = published[0].spec.devices.clone().unwrap();
    assert_eq!(stored[0].taints, None, "1.35 dropped the taint");
    assert_eq!(stored[1].allow_multiple_allocations, None);
    assert_eq!(write_count(&f.server), 1);

    let synced = republish(&publisher, &mut status, &desired, synced.synced_generation).await;
    assert_eq!(write_count(&f.server), 1, "rewrote what the server dropped");

    // A real change is written (once), and what it no longer has is no longer dropped.
    let changed = resources(&[(NODE, vec![device("eth0"), device("eth1")])]);
    publisher.update(changed.clone());
    let synced = wait_status(&mut status, |s| {
        s.synced_generation > synced && s.last_error.is_none() && s.dropped_fields.is_empty()
    })
    .await
    .synced_generation;
    assert_eq!(write_count(&f.server), 2);
    assert_pool(
        &node_slices(&f.slices).await,
        NODE,
        &[device("eth0"), device("eth1")],
        &f.node_uid,
    );
    republish(&publisher, &mut status, &changed, synced).await;
    assert_eq!(write_count(&f.server), 2);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

/// A rewrite for another reason keeps the `timeAdded` of taints that did not change: a
/// `NoExecute` toleration's `tolerationSeconds` counts from it.
#[tokio::test]
async fn taint_times_survive_rewrites_for_other_reasons() {
    let f = fixture_with(ApiServerOptions::kubernetes(37)).await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let eth0 = tainted(device("eth0"), "NoExecute");
    publisher.update(resources(&[(NODE, vec![eth0.clone(), device("eth1")])]));
    let synced = wait_synced(&mut status, 0).await.synced_generation;

    // Give the stored taint a time long past, as if it had been there since 2020 (the
    // stand-in stores whole seconds, so a write now could not be told from one a moment
    // ago). Taint times aside, the slice is still what the publisher wants: no rewrite.
    let mut slice = node_slices(&f.slices).await.remove(0);
    let old = "2020-01-01T00:00:00Z";
    slice.spec.devices.as_mut().unwrap()[0]
        .taints
        .as_mut()
        .unwrap()[0]
        .time_added = Some(serde_json::from_value(json!(old)).unwrap());
    let name = slice.metadata.name.clone().unwrap();
    f.slices
        .replace(&name, &PostParams::default(), &slice)
        .await
        .unwrap();
    // Once the publisher has seen that version (else its rewrite below would be a 409 and
    // a second try, as for any change its watch has not told yet).
    let synced = watch_barrier(&f, &mut status, synced).await;
    let writes = write_count(&f.server);

    let mut eth1 = device("eth1");
    eth1.attributes.as_mut().unwrap().insert(
        "netclaim.dev/mtu".into(),
        serde_json::from_value(json!({ "int": 9000 })).unwrap(),
    );
    publisher.update(resources(&[(NODE, vec![eth0, eth1])]));
    wait_synced(&mut status, synced).await;
    assert_eq!(write_count(&f.server), writes + 1, "one rewrite for eth1");
    let stored = node_slices(&f.slices).await.remove(0);
    let taint = &stored.spec.devices.unwrap()[0].taints.clone().unwrap()[0];
    assert_eq!(
        serde_json::to_value(&taint.time_added).unwrap(),
        json!(old),
        "the rewrite restarted the taint's time"
    );
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

#[tokio::test]
async fn waits_for_the_node_and_uses_a_given_uid() {
    let server = ApiServer::start().await.unwrap();
    let slices: Api<ResourceSlice> = Api::all(server.client());
    let publisher = ResourceSlicePublisher::start(server.client(), config());
    let mut status = publisher.status();
    publisher.update(resources(&[(NODE, devices("a", 1))]));
    let missing = wait_status(&mut status, |s| s.last_error.is_some()).await;
    assert!(missing.last_error.unwrap().contains("Node"));

    let node: Node = serde_json::from_value(json!({ "metadata": { "name": NODE } })).unwrap();
    let node = Api::<Node>::all(server.client())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    wait_synced(&mut status, 0).await;
    assert_pool(
        &node_slices(&slices).await,
        NODE,
        &devices("a", 1),
        node.metadata.uid.as_deref().unwrap(),
    );
    publisher.shutdown(true).await;

    let given = PublisherConfig {
        node_uid: Some("given-uid".into()),
        ..config()
    };
    let publisher = ResourceSlicePublisher::start(server.client(), given);
    let mut status = publisher.status();
    publisher.update(resources(&[(NODE, devices("a", 1))]));
    wait_synced(&mut status, 0).await;
    assert_pool(
        &node_slices(&slices).await,
        NODE,
        &devices("a", 1),
        "given-uid",
    );
    publisher.shutdown(false).await;
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_deletes_this_nodes_slices_only() {
    let f = fixture().await;
    let other: ResourceSlice = serde_json::from_value(json!({
        "metadata": { "name": "other-node-slice" },
        "spec": { "driver": DRIVER, "nodeName": "node-b",
                  "pool": { "name": "node-b", "generation": 1, "resourceSliceCount": 1 } }
    }))
    .unwrap();
    f.slices
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    publisher.update(resources(&[(NODE, devices("a", 200))]));
    wait_synced(&mut status, 0).await;
    assert_eq!(node_slices(&f.slices).await.len(), 2);
    publisher.shutdown(true).await;
    assert!(node_slices(&f.slices).await.is_empty());
    let left = f.slices.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(left.len(), 1, "other nodes' slices untouched");
    f.server.shutdown().await;
}

/// Requests received since the traffic counter was reset, by (verb, resource), the
/// resources a publisher uses only.
fn requests(server: &ApiServer) -> BTreeMap<(String, String), u64> {
    server
        .traffic()
        .by_verb()
        .into_iter()
        .filter(|((_, resource), _)| resource == "resourceslices" || resource == "nodes")
        .collect()
}

fn counts(expected: &[(&str, u64)]) -> BTreeMap<(String, String), u64> {
    expected
        .iter()
        .map(|(verb, count)| ((verb.to_string(), "resourceslices".to_string()), *count))
        .collect()
}

/// Once started, the publisher keeps its view of its slices from its watch: a pass for a new
/// desired state sends its write and nothing else (no LIST, no Node lookup).
#[tokio::test]
async fn a_pass_for_a_desired_change_sends_only_its_write() {
    let f = fixture().await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    publisher.update(resources(&[(NODE, devices("eth", 3))]));
    let synced = wait_synced(&mut status, 0).await.synced_generation;
    // Its watch is open (its request can come after the first pass).
    let synced = watch_barrier(&f, &mut status, synced).await;

    f.server.traffic().reset();
    let desired = devices("eth", 4);
    publisher.update(resources(&[(NODE, desired.clone())]));
    wait_synced(&mut status, synced).await;
    assert_eq!(requests(&f.server), counts(&[("update", 1)]));
    assert_pool(&node_slices(&f.slices).await, NODE, &desired, &f.node_uid);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

/// A slice someone else deletes (the kubelet does at its start) comes back from the watch's
/// event alone: one create, no LIST.
#[tokio::test]
async fn a_slice_deleted_by_someone_else_is_recreated_from_the_watch_event() {
    let f = fixture().await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let desired = devices("eth", 3);
    publisher.update(resources(&[(NODE, desired.clone())]));
    let synced = wait_synced(&mut status, 0).await.synced_generation;
    let synced = watch_barrier(&f, &mut status, synced).await;
    let slices = node_slices(&f.slices).await;
    let generation = assert_pool(&slices, NODE, &desired, &f.node_uid);

    f.server.traffic().reset();
    let name = slices[0].metadata.name.clone().unwrap();
    f.slices
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_synced(&mut status, synced).await;
    // The delete is this test's; the create is the publisher's.
    assert_eq!(requests(&f.server), counts(&[("create", 1), ("delete", 1)]));
    let republished = node_slices(&f.slices).await;
    assert_ne!(republished[0].metadata.name.as_deref(), Some(name.as_str()));
    assert!(assert_pool(&republished, NODE, &desired, &f.node_uid) > generation);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

/// A slice someone else changes is rewritten from the watch's event: one update over the
/// changed version, no LIST.
#[tokio::test]
async fn a_slice_changed_by_someone_else_is_rewritten_from_the_watch_event() {
    let f = fixture().await;
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let desired = devices("eth", 3);
    publisher.update(resources(&[(NODE, desired.clone())]));
    let synced = wait_synced(&mut status, 0).await.synced_generation;
    let synced = watch_barrier(&f, &mut status, synced).await;
    let mut tampered = node_slices(&f.slices).await.remove(0);
    let generation = tampered.spec.pool.generation;

    f.server.traffic().reset();
    tampered.spec.devices.as_mut().unwrap().pop();
    let name = tampered.metadata.name.clone().unwrap();
    let tampered = f
        .slices
        .replace(&name, &PostParams::default(), &tampered)
        .await
        .unwrap();
    wait_synced(&mut status, synced).await;
    // One update is this test's, the other the publisher's.
    assert_eq!(requests(&f.server), counts(&[("update", 2)]));
    let repaired = node_slices(&f.slices).await;
    assert_eq!(repaired[0].metadata.name.as_deref(), Some(name.as_str()));
    assert!(assert_pool(&repaired, NODE, &desired, &f.node_uid) > generation);
    assert_ne!(
        repaired[0].metadata.resource_version,
        tampered.metadata.resource_version
    );
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

/// An update from a view older than the slice (someone changed it, and the watch has not
/// told yet: held here) is a 409 that changes nothing; the publisher reads that slice and
/// the retry writes over the current version, without waiting for the watch. When the held
/// events come at last, the earlier versions among them cause no write.
#[tokio::test]
async fn an_update_from_a_stale_view_conflicts_and_converges() {
    let f = fixture().await;
    let faults = f.server.faults();
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    publisher.update(resources(&[(NODE, devices("a", 2))]));
    let synced = wait_synced(&mut status, 0).await.synced_generation;
    let synced = watch_barrier(&f, &mut status, synced).await;

    faults.hold_watches("resourceslices");
    let mut tampered = node_slices(&f.slices).await.remove(0);
    tampered.spec.devices.as_mut().unwrap().pop();
    let name = tampered.metadata.name.clone().unwrap();
    f.slices
        .replace(&name, &PostParams::default(), &tampered)
        .await
        .unwrap();
    f.server.traffic().reset();
    let desired = devices("b", 3);
    publisher.update(resources(&[(NODE, desired.clone())]));
    let synced = wait_synced(&mut status, synced).await.synced_generation;
    // The stale update (409), the read of the slice, the update over it.
    assert_eq!(requests(&f.server), counts(&[("get", 1), ("update", 2)]));
    assert_pool(&node_slices(&f.slices).await, NODE, &desired, &f.node_uid);

    // The held events (the change by someone else, the publisher's write) come now.
    faults.release_watches("resourceslices");
    f.server.traffic().reset();
    watch_barrier(&f, &mut status, synced).await;
    assert_eq!(
        requests(&f.server),
        counts(&[("create", 1), ("delete", 1)]),
        "late events for earlier versions made the publisher write (only the barrier's \
         create and delete expected)"
    );
    let slices = node_slices(&f.slices).await;
    assert_eq!(slices.len(), 1);
    assert_pool(&slices, NODE, &desired, &f.node_uid);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

/// A watch that falls out of the API server's history (410 Gone) lists again; the list
/// replaces the view, so what the watch missed (here a deleted slice) is repaired.
#[tokio::test]
async fn a_lost_watch_lists_again_and_repairs_what_it_missed() {
    let f = fixture().await;
    let faults = f.server.faults();
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    let desired = devices("eth", 3);
    publisher.update(resources(&[(NODE, desired.clone())]));
    let synced = wait_synced(&mut status, 0).await.synced_generation;
    let synced = watch_barrier(&f, &mut status, synced).await;
    let name = node_slices(&f.slices).await[0]
        .metadata
        .name
        .clone()
        .unwrap();

    // The publisher's watch does not see the delete, then loses its place.
    faults.hold_watches("resourceslices");
    f.slices
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    f.server.traffic().reset();
    faults.expire_watches("resourceslices");
    let synced = wait_synced(&mut status, synced).await.synced_generation;
    faults.release_watches("resourceslices");
    // The barrier comes through the new watch, so that is open too.
    watch_barrier(&f, &mut status, synced).await;
    // The publisher's list and create, the new watch; the barrier's create and delete.
    assert_eq!(
        requests(&f.server),
        counts(&[("create", 2), ("delete", 1), ("list", 1), ("watch", 1)])
    );
    let slices = node_slices(&f.slices).await;
    assert_eq!(slices.len(), 1);
    assert_pool(&slices, NODE, &desired, &f.node_uid);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}

/// Until its watch has listed, the publisher writes nothing: it would create a second slice
/// next to one it has not seen yet. Here the slice of an earlier run is in place and the
/// list fails twice; the publisher says why it waits, then takes the slice as it is.
#[tokio::test]
async fn nothing_is_written_before_the_watch_has_listed() {
    let f = fixture().await;
    let faults = f.server.faults();
    let desired = devices("eth", 3);
    let earlier_run: ResourceSlice = serde_json::from_value(json!({
        "metadata": {
            "generateName": "node-a-netclaim.dev-",
            "ownerReferences": [{ "apiVersion": "v1", "kind": "Node", "name": NODE,
                                  "uid": f.node_uid, "controller": true }],
        },
        "spec": { "driver": DRIVER, "nodeName": NODE, "devices": desired,
                  "pool": { "name": NODE, "generation": 4, "resourceSliceCount": 1 } }
    }))
    .unwrap();
    f.slices
        .create(&PostParams::default(), &earlier_run)
        .await
        .unwrap();
    let before = node_slices(&f.slices).await;

    faults.fail_next("GET", "resourceslices", 2, 500);
    let publisher = ResourceSlicePublisher::start(f.server.client(), config());
    let mut status = publisher.status();
    publisher.update(resources(&[(NODE, desired.clone())]));
    let waiting = wait_status(&mut status, |s| s.last_error.is_some()).await;
    let error = waiting.last_error.unwrap();
    assert!(error.starts_with("watching ResourceSlices"), "{error}");
    assert_eq!(waiting.synced_generation, 0);
    wait_synced(&mut status, 0).await;
    assert_eq!(write_count(&f.server), 1, "only the test's own create");
    assert_eq!(node_slices(&f.slices).await, before);
    publisher.shutdown(false).await;
    f.server.shutdown().await;
}
