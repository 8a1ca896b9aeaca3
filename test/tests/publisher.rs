//! The ResourceSlice publisher against the API server stand-in.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubeletplugin::{
    DriverResources, Pool, PublishStatus, PublisherConfig, ResourceSlicePublisher,
};
use netclaim_test::apiserver::ApiServer;
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
    let server = ApiServer::start().await.unwrap();
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
            .map(|(name, devices)| {
                (
                    name.to_string(),
                    Pool {
                        devices: devices.clone(),
                    },
                )
            })
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
    let key = |d: &Device| serde_json::to_string(d).unwrap();
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
    let f = fixture().await;
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

/// A kube client whose writes of ResourceSlices go through `normalise` first, as a real API
/// server's defaulting changes what it stores: what the publisher reads back then differs
/// from what it wrote. Also counts the slice writes that reached the server.
fn normalising_client(
    server: &ApiServer,
    normalise: fn(&mut serde_json::Value),
) -> (kube::Client, Arc<AtomicUsize>) {
    let inner = server.client();
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = writes.clone();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let counted = counted.clone();
        async move {
            let writes_slice = matches!(*request.method(), http::Method::POST | http::Method::PUT)
                && request.uri().path().contains("/resourceslices");
            if !writes_slice {
                return inner.send(request).await;
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let (mut parts, body) = request.into_parts();
            let mut object: serde_json::Value =
                serde_json::from_slice(&body.collect_bytes().await?).unwrap();
            normalise(&mut object);
            let bytes = serde_json::to_vec(&object).unwrap();
            parts.headers.remove(http::header::CONTENT_LENGTH);
            inner
                .send(http::Request::from_parts(parts, bytes.into()))
                .await
        }
    });
    (kube::Client::new(service, "default"), writes)
}

/// What the API server does to a device taint written without `timeAdded`
/// (`resource.k8s.io/v1` DeviceTaint: "Added automatically during create or update if not
/// set"): it stores the time of the write.
fn stamp_taints(slice: &mut serde_json::Value) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let devices = slice["spec"]["devices"].as_array_mut();
    for device in devices.into_iter().flatten() {
        let taints = device["taints"].as_array_mut();
        for taint in taints.into_iter().flatten() {
            if taint.get("timeAdded").is_none() {
                taint["timeAdded"] = json!(now);
            }
        }
    }
}

/// The publisher must not rewrite slices because the server filled in a field it left
/// empty: every rewrite would be filled in again and trigger the next (a hot loop against
/// the API server). The period checked is bounded by events, not time: each desired-state
/// update makes the publisher run one full pass (list, compare, write what differs), and
/// the status proves the pass ran; its own writes' watch events add passes on top.
#[tokio::test]
#[ignore = "kubeletplugin bug: the publisher compares the slices it reads back field by field \
            with the desired devices, so a field the API server fills in (a device taint's \
            timeAdded) makes every pass rewrite the pool; see the report of issue 11"]
async fn a_field_the_server_fills_in_does_not_make_the_publisher_rewrite_in_a_loop() {
    let f = fixture().await;
    let (client, writes) = normalising_client(&f.server, stamp_taints);
    let publisher = ResourceSlicePublisher::start(client, config());
    let mut status = publisher.status();
    let mut tainted = devices("eth", 2);
    tainted[0].taints = Some(vec![
        serde_json::from_value(json!({ "key": "netclaim.dev/down", "effect": "NoSchedule" }))
            .unwrap(),
    ]);
    let desired = resources(&[(NODE, tainted)]);
    publisher.update(desired.clone());
    let mut synced = wait_synced(&mut status, 0).await.synced_generation;
    let published = node_slices(&f.slices).await;
    assert_eq!(published.len(), 1);
    let stored = published[0].spec.devices.as_ref().unwrap()[0]
        .taints
        .as_ref()
        .unwrap();
    assert!(
        stored[0].time_added.is_some(),
        "the stand-in in front did not fill it in"
    );

    const PASSES: usize = 5;
    for _ in 0..PASSES {
        publisher.update(desired.clone());
        synced = wait_synced(&mut status, synced).await.synced_generation;
    }
    // One slice, one create; nothing after it in the passes that followed.
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "the publisher rewrote unchanged slices (generation now {synced})"
    );
    assert_eq!(node_slices(&f.slices).await.len(), 1);
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
