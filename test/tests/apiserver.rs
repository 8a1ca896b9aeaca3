//! The API server stand-in, driven by the real kube client.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
use netclaim_test::apiserver::{ApiServer, ApiServerOptions};
use serde_json::{Value, json};

const DRIVER: &str = "netclaim.dev";

fn claim(name: &str) -> ResourceClaim {
    serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": { "name": name },
        "spec": { "devices": { "requests": [
            { "name": "nic", "exactly": { "deviceClassName": "netclaim.dev" } }
        ] } }
    }))
    .unwrap()
}

fn node(name: &str) -> Node {
    serde_json::from_value(
        json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name } }),
    )
    .unwrap()
}

fn slice_json(name: &str, node: &str, devices: Vec<Value>) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": { "name": name },
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": { "name": node, "generation": 1, "resourceSliceCount": 1 },
            "devices": devices,
        }
    })
}

fn slice(name: &str, node: &str, devices: Vec<Value>) -> ResourceSlice {
    serde_json::from_value(slice_json(name, node, devices)).unwrap()
}

fn device(name: &str) -> Value {
    json!({ "name": name, "attributes": { "netclaim.dev/ifName": { "string": name } } })
}

/// The API status of a failed call; panics (failing the test) on success or other errors.
fn api_status<T: std::fmt::Debug>(result: kube::Result<T>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn claims_and_nodes_crud() {
    let server = ApiServer::start().await.unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "default");
    let created = claims
        .create(&PostParams::default(), &claim("c1"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| !u.is_empty()));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.namespace.as_deref(), Some("default"));

    let fetched = claims.get("c1").await.unwrap();
    assert_eq!(fetched.metadata.resource_version, meta.resource_version);

    let err = api_status(claims.create(&PostParams::default(), &claim("c1")).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));

    let err = api_status(claims.get("missing").await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));

    let nodes: Api<Node> = Api::all(server.client());
    let n = nodes
        .create(&PostParams::default(), &node("node-a"))
        .await
        .unwrap();
    let mut labelled = n.clone();
    labelled.metadata.labels = Some([("zone".to_string(), "a".to_string())].into());
    let replaced = nodes
        .replace("node-a", &PostParams::default(), &labelled)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        n.metadata.resource_version
    );
    assert_eq!(replaced.metadata.uid, n.metadata.uid);
    let listed = nodes
        .list(&ListParams::default().labels("zone=a"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(
        nodes
            .list(&ListParams::default().labels("zone=b"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    nodes
        .delete("node-a", &DeleteParams::default())
        .await
        .unwrap();
    let err = api_status(nodes.get("node-a").await);
    assert_eq!(err.code, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn generate_name_and_claim_status_subresource() {
    let server = ApiServer::start().await.unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "ns1");
    let mut c = claim("");
    c.metadata.name = None;
    c.metadata.generate_name = Some("claim-".into());
    // The real API drops status on create.
    c.status = Some(
        serde_json::from_value(json!({ "reservedFor": [
        { "resource": "pods", "name": "p", "uid": "u1" } ] }))
        .unwrap(),
    );
    let created = claims.create(&PostParams::default(), &c).await.unwrap();
    let name = created.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("claim-") && name.len() == "claim-".len() + 5,
        "{name}"
    );
    assert!(created.status.is_none());

    // Status written through /status; a spec change there is ignored.
    let mut with_status = created.clone();
    with_status.status = Some(serde_json::from_value(allocated_status(&["eth1"])).unwrap());
    with_status
        .spec
        .as_mut()
        .unwrap()
        .devices
        .as_mut()
        .unwrap()
        .requests
        .as_mut()
        .unwrap()[0]
        .name = "other".into();
    let updated = claims
        .replace_status(&name, &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert!(updated.status.unwrap().allocation.is_some());
    assert_eq!(
        updated.spec.unwrap().devices.unwrap().requests.unwrap()[0].name,
        "nic"
    );

    // A main-resource update does not touch status.
    let mut fresh = claims.get(&name).await.unwrap();
    fresh.status = None;
    let kept = claims
        .replace(&name, &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(kept.status.is_some());
    server.shutdown().await;
}

fn allocated_status(devices: &[&str]) -> Value {
    let results: Vec<Value> = devices
        .iter()
        .map(|d| json!({ "request": "nic", "driver": DRIVER, "pool": "node-a", "device": d }))
        .collect();
    json!({ "allocation": { "devices": { "results": results } } })
}

#[tokio::test]
async fn a_merge_patch_with_a_stale_resource_version_conflicts() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p", "annotations": { "a": "1" } },
        "spec": { "containers": [{ "name": "app", "image": "app" }] }
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let read_version = created.metadata.resource_version.clone().unwrap();
    // Someone else writes in between: the version read is stale now.
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { "b": "2" } } })),
    )
    .await
    .unwrap();
    let stale = json!({ "metadata": {
        "resourceVersion": read_version, "annotations": { "c": "3" } } });
    let err = api_status(
        pods.patch("p", &PatchParams::default(), &Patch::Merge(&stale))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let current = pods.get("p").await.unwrap();
    let annotations = current.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations.get("c"),
        None,
        "a refused patch changes nothing"
    );
    // With the current version the patch applies, and keeps the other writer's annotation.
    let fresh = json!({ "metadata": {
        "resourceVersion": current.metadata.resource_version, "annotations": { "c": "3" } } });
    let patched = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(&fresh))
        .await
        .unwrap();
    let annotations = patched.metadata.annotations.unwrap();
    assert_eq!(
        (
            annotations["a"].as_str(),
            annotations["b"].as_str(),
            annotations["c"].as_str()
        ),
        ("1", "2", "3")
    );
}

#[tokio::test]
async fn stale_resource_version_conflicts() {
    let server = ApiServer::start().await.unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "default");
    let first = claims
        .create(&PostParams::default(), &claim("c"))
        .await
        .unwrap();
    let mut a = first.clone();
    a.metadata.labels = Some([("a".to_string(), "1".to_string())].into());
    claims
        .replace("c", &PostParams::default(), &a)
        .await
        .unwrap();
    let mut b = first.clone();
    b.metadata.labels = Some([("b".to_string(), "1".to_string())].into());
    let err = api_status(claims.replace("c", &PostParams::default(), &b).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
    server.shutdown().await;
}

#[tokio::test]
async fn field_selectors_and_delete_collection() {
    let server = ApiServer::start().await.unwrap();
    let slices: Api<ResourceSlice> = Api::all(server.client());
    for (name, node) in [("a1", "node-a"), ("a2", "node-a"), ("b1", "node-b")] {
        slices
            .create(
                &PostParams::default(),
                &slice(name, node, vec![device("eth1")]),
            )
            .await
            .unwrap();
    }
    let on_a = ListParams::default().fields(&format!("spec.nodeName=node-a,spec.driver={DRIVER}"));
    let names = |list: kube::core::ObjectList<ResourceSlice>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect()
    };
    assert_eq!(names(slices.list(&on_a).await.unwrap()), ["a1", "a2"]);
    let not_a = ListParams::default().fields("spec.nodeName!=node-a");
    assert_eq!(names(slices.list(&not_a).await.unwrap()), ["b1"]);
    let by_name = ListParams::default().fields("metadata.name=a2");
    assert_eq!(names(slices.list(&by_name).await.unwrap()), ["a2"]);
    let other_driver = ListParams::default().fields("spec.driver=other.dev");
    assert!(slices.list(&other_driver).await.unwrap().items.is_empty());
    // The real API only supports some field labels per type.
    let err = api_status(
        slices
            .list(&ListParams::default().fields("spec.pool.name=x"))
            .await,
    );
    assert_eq!(err.code, 400);

    // Paging with limit/continue returns every item once.
    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(2);
    loop {
        let page = slices.list(&params).await.unwrap();
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        seen.extend(names(page));
        match next {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(seen, ["a1", "a2", "b1"]);

    slices
        .delete_collection(&DeleteParams::default(), &on_a)
        .await
        .unwrap();
    assert_eq!(
        names(slices.list(&ListParams::default()).await.unwrap()),
        ["b1"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn watch_sees_added_modified_deleted() {
    let server = ApiServer::start().await.unwrap();
    let slices: Api<ResourceSlice> = Api::all(server.client());
    slices
        .create(&PostParams::default(), &slice("before", "node-a", vec![]))
        .await
        .unwrap();
    let list = slices.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let params = WatchParams::default().fields("spec.nodeName=node-a");
    let mut events = slices.watch(&params, &rv).await.unwrap().boxed();

    let created = slices
        .create(&PostParams::default(), &slice("w", "node-a", vec![]))
        .await
        .unwrap();
    slices
        .create(
            &PostParams::default(),
            &slice("elsewhere", "node-b", vec![]),
        )
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.spec.devices = Some(vec![serde_json::from_value(device("eth1")).unwrap()]);
    slices
        .replace("w", &PostParams::default(), &changed)
        .await
        .unwrap();
    slices.delete("w", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("watch event in time")
            .expect("watch stream open")
            .unwrap();
        match event {
            WatchEvent::Added(s) => seen.push(("ADDED", s.metadata.name.unwrap())),
            WatchEvent::Modified(s) => seen.push(("MODIFIED", s.metadata.name.unwrap())),
            WatchEvent::Deleted(s) => seen.push(("DELETED", s.metadata.name.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    let w = "w".to_string();
    assert_eq!(
        seen,
        [
            ("ADDED", w.clone()),
            ("MODIFIED", w.clone()),
            ("DELETED", w)
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_watcher_works_against_it() {
    let server = ApiServer::start().await.unwrap();
    let slices: Api<ResourceSlice> = Api::all(server.client());
    slices
        .create(&PostParams::default(), &slice("s0", "node-a", vec![]))
        .await
        .unwrap();
    let config = kube::runtime::watcher::Config::default().fields("spec.nodeName=node-a");
    let mut objects = kube::runtime::WatchStreamExt::applied_objects(kube::runtime::watcher(
        slices.clone(),
        config,
    ))
    .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), objects.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("s0"));
    slices
        .create(&PostParams::default(), &slice("s1", "node-a", vec![]))
        .await
        .unwrap();
    // The streaming-list variant (sendInitialEvents plus the initial-events-end bookmark).
    let streaming = kube::runtime::watcher::Config::default()
        .fields("spec.nodeName=node-a")
        .streaming_lists();
    let mut streamed = kube::runtime::WatchStreamExt::applied_objects(kube::runtime::watcher(
        slices.clone(),
        streaming,
    ))
    .boxed();
    let initial = tokio::time::timeout(Duration::from_secs(10), streamed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(initial.metadata.name.as_deref(), Some("s0"));
    let second = tokio::time::timeout(Duration::from_secs(10), objects.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.metadata.name.as_deref(), Some("s1"));
    let streamed_second = tokio::time::timeout(Duration::from_secs(10), streamed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(streamed_second.metadata.name.as_deref(), Some("s1"));
    server.shutdown().await;
}

async fn rejected_slice(server: &ApiServer, value: Value) -> Status {
    let raw: Api<kube::api::DynamicObject> = Api::all_with(
        server.client(),
        &kube::api::ApiResource::erase::<ResourceSlice>(&()),
    );
    let object: kube::api::DynamicObject = serde_json::from_value(value).unwrap();
    let err = api_status(raw.create(&PostParams::default(), &object).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (422, "Invalid"),
        "{}",
        err.message
    );
    err
}

#[tokio::test]
async fn slice_validation_rejects_what_the_real_api_rejects() {
    let server = ApiServer::start().await.unwrap();

    let mut many = serde_json::Map::new();
    for i in 0..33 {
        many.insert(format!("netclaim.dev/a{i}"), json!({ "int": i }));
    }
    let err = rejected_slice(
        &server,
        slice_json("s", "n", vec![json!({ "name": "d", "attributes": many })]),
    )
    .await;
    assert!(
        err.message.contains("spec.devices[0].attributes"),
        "{}",
        err.message
    );

    let long =
        json!({ "name": "d", "attributes": { "netclaim.dev/x": { "string": "x".repeat(65) } } });
    let err = rejected_slice(&server, slice_json("s", "n", vec![long])).await;
    assert!(
        err.message
            .contains("spec.devices[0].attributes[netclaim.dev/x].string: Too long"),
        "{}",
        err.message
    );

    let devices: Vec<Value> = (0..129)
        .map(|i| json!({ "name": format!("d{i}") }))
        .collect();
    let err = rejected_slice(&server, slice_json("s", "n", devices)).await;
    assert!(
        err.message.contains("spec.devices: Too many: 129"),
        "{}",
        err.message
    );

    let bad_name = json!({ "name": "d", "attributes": { "foo bar": { "bool": true } } });
    let err = rejected_slice(&server, slice_json("s", "n", vec![bad_name])).await;
    assert!(
        err.message
            .contains("spec.devices[0].attributes[foo bar]: Invalid value"),
        "{}",
        err.message
    );

    let two_values = json!({ "name": "d", "attributes": { "a": { "bool": true, "int": 1 } } });
    let err = rejected_slice(&server, slice_json("s", "n", vec![two_values])).await;
    assert!(err.message.contains("exactly one value"), "{}", err.message);

    let bad_version = json!({ "name": "d", "attributes": { "v": { "version": "v1.2" } } });
    rejected_slice(&server, slice_json("s", "n", vec![bad_version])).await;

    let duplicate = vec![json!({ "name": "d" }), json!({ "name": "d" })];
    let err = rejected_slice(&server, slice_json("s", "n", duplicate)).await;
    assert!(
        err.message
            .contains("spec.devices[1].name: Duplicate value"),
        "{}",
        err.message
    );

    let mut no_node = slice_json("s", "n", vec![]);
    no_node["spec"].as_object_mut().unwrap().remove("nodeName");
    let err = rejected_slice(&server, no_node).await;
    assert!(err.message.contains("exactly one of"), "{}", err.message);

    let mut two_nodes = slice_json("s", "n", vec![]);
    two_nodes["spec"]["allNodes"] = json!(true);
    rejected_slice(&server, two_nodes).await;

    let mut bad_count = slice_json("s", "n", vec![]);
    bad_count["spec"]["pool"]["resourceSliceCount"] = json!(0);
    let err = rejected_slice(&server, bad_count).await;
    assert!(
        err.message.contains("spec.pool.resourceSliceCount"),
        "{}",
        err.message
    );

    // The limits themselves are accepted.
    let mut full = serde_json::Map::new();
    for i in 0..32 {
        full.insert(
            format!("netclaim.dev/a{i}"),
            json!({ "string": "x".repeat(64) }),
        );
    }
    let mut devices: Vec<Value> = (1..128)
        .map(|i| json!({ "name": format!("d{i}") }))
        .collect();
    devices.push(json!({ "name": "d0", "attributes": full }));
    let ok: ResourceSlice = serde_json::from_value(slice_json("ok", "n", devices)).unwrap();
    Api::<ResourceSlice>::all(server.client())
        .create(&PostParams::default(), &ok)
        .await
        .unwrap();
    server.shutdown().await;
}

fn tainted_device(name: &str, taints: Vec<Value>) -> Value {
    json!({ "name": name, "taints": taints })
}

fn taint(key: &str, value: Option<&str>, effect: &str) -> Value {
    let mut taint = json!({ "key": key, "effect": effect });
    if let Some(value) = value {
        taint["value"] = json!(value);
    }
    taint
}

/// Device taints (`DRADeviceTaints`): dropped on write while the gate is off (1.34 and
/// 1.35 by default), validated as the release validates them when it is on.
#[tokio::test]
async fn device_taints_are_dropped_without_the_gate_and_validated_per_release() {
    let many = |count: usize| -> Vec<Value> {
        (0..count)
            .map(|i| {
                tainted_device(
                    &format!("d{i}"),
                    vec![taint("netclaim.dev/unhealthy", None, "NoSchedule")],
                )
            })
            .collect()
    };

    // 1.34, gate off: 65 tainted devices are accepted, without their taints.
    let server = ApiServer::start().await.unwrap();
    let stored = Api::<ResourceSlice>::all(server.client())
        .create(&PostParams::default(), &slice("s", "n", many(65)))
        .await
        .unwrap();
    let devices = stored.spec.devices.unwrap();
    assert_eq!(devices.len(), 65);
    assert!(devices.iter().all(|d| d.taints.is_none()));
    server.shutdown().await;

    // 1.34 with the gate on: its limits (4 taints, no `None` effect).
    let server =
        ApiServer::start_with(ApiServerOptions::kubernetes(34).with_dra_device_taints(true))
            .await
            .unwrap();
    let err = rejected_slice(&server, slice_json("s", "n", many(65))).await;
    assert!(
        err.message
            .contains("spec.devices: Too many: 65: must have at most 64 items"),
        "{}",
        err.message
    );
    let none = tainted_device("d", vec![taint("k", None, "None")]);
    let err = rejected_slice(&server, slice_json("s", "n", vec![none.clone()])).await;
    assert!(
        err.message.contains(
            "spec.devices[0].taints[0].effect: Unsupported value: \"None\": supported values: \"NoExecute\", \"NoSchedule\""
        ),
        "{}",
        err.message
    );
    let five = (0..5)
        .map(|i| taint(&format!("k{i}"), None, "NoSchedule"))
        .collect();
    let err = rejected_slice(
        &server,
        slice_json("s", "n", vec![tainted_device("d", five)]),
    )
    .await;
    assert!(
        err.message
            .contains("spec.devices[0].taints: Too many: 5: must have at most 4 items"),
        "{}",
        err.message
    );
    server.shutdown().await;

    // 1.37 (GA): `None` exists, 16 taints per device, keys and values are label syntax.
    let server = ApiServer::start_with(ApiServerOptions::kubernetes(37))
        .await
        .unwrap();
    let slices = Api::<ResourceSlice>::all(server.client());
    let sixteen = (0..16)
        .map(|i| taint(&format!("example.com/k{i}"), Some("v"), "None"))
        .collect();
    let stored = slices
        .create(
            &PostParams::default(),
            &slice("ok", "n", vec![tainted_device("d", sixteen)]),
        )
        .await
        .unwrap();
    let taints = stored.spec.devices.unwrap()[0].taints.clone().unwrap();
    assert_eq!(taints.len(), 16);
    assert!(
        taints.iter().all(|t| t.time_added.is_some()),
        "timeAdded defaulted"
    );
    let seventeen = (0..17)
        .map(|i| taint(&format!("k{i}"), None, "NoExecute"))
        .collect();
    let err = rejected_slice(
        &server,
        slice_json("s", "n", vec![tainted_device("d", seventeen)]),
    )
    .await;
    assert!(
        err.message
            .contains("spec.devices[0].taints: Too many: 17: must have at most 16 items"),
        "{}",
        err.message
    );
    let bad = tainted_device(
        "d",
        vec![
            taint("bad key", None, "NoSchedule"),
            taint("k", Some("a b"), "Evict"),
        ],
    );
    let err = rejected_slice(&server, slice_json("s", "n", vec![bad])).await;
    for expected in [
        "spec.devices[0].taints[0].key: Invalid value: \"bad key\"",
        "spec.devices[0].taints[1].value: Invalid value: \"a b\"",
        "spec.devices[0].taints[1].effect: Unsupported value: \"Evict\"",
    ] {
        assert!(
            err.message.contains(expected),
            "{expected}: {}",
            err.message
        );
    }
    let err = rejected_slice(&server, slice_json("s", "n", many(65))).await;
    assert!(
        err.message.contains("spec.devices: Too many: 65"),
        "{}",
        err.message
    );
    server.shutdown().await;
}

fn device_status(device: &str, ifname: &str) -> Value {
    json!({
        "driver": DRIVER, "pool": "node-a", "device": device,
        "conditions": [{ "type": "Ready", "status": "True", "reason": "Attached", "message": "",
                          "lastTransitionTime": "2026-01-01T00:00:00Z" }],
        "networkData": { "interfaceName": ifname, "ips": ["192.0.2.10/24"] },
    })
}

fn apply_status(devices: Vec<Value>) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": { "name": "c", "namespace": "default" },
        "status": { "devices": devices },
    })
}

#[tokio::test]
async fn status_server_side_apply_from_two_managers() {
    let server = ApiServer::start().await.unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "default");
    let mut c = claims
        .create(&PostParams::default(), &claim("c"))
        .await
        .unwrap();
    c.status = Some(serde_json::from_value(allocated_status(&["eth1", "eth2"])).unwrap());
    claims
        .replace_status("c", &PostParams::default(), &c)
        .await
        .unwrap();

    let apply = |manager: &'static str| PatchParams::apply(manager);
    claims
        .patch_status(
            "c",
            &apply("node-a"),
            &Patch::Apply(apply_status(vec![device_status("eth1", "net1")])),
        )
        .await
        .unwrap();
    let both = claims
        .patch_status(
            "c",
            &apply("node-b"),
            &Patch::Apply(apply_status(vec![device_status("eth2", "net2")])),
        )
        .await
        .unwrap();
    let status = both.status.unwrap();
    let devices: Vec<String> = status
        .devices
        .unwrap()
        .into_iter()
        .map(|d| d.device)
        .collect();
    assert_eq!(devices, ["eth1", "eth2"]);
    assert!(
        status.allocation.is_some(),
        "allocation untouched by appliers"
    );

    // Same field, different value, other manager: conflict unless forced.
    let stolen = json!({ "driver": DRIVER, "pool": "node-a", "device": "eth1",
                         "networkData": { "interfaceName": "stolen" } });
    let steal = Patch::Apply(apply_status(vec![stolen.clone()]));
    let err = api_status(claims.patch_status("c", &apply("node-b"), &steal).await);
    assert_eq!(err.code, 409);
    assert!(
        err.message.contains("conflict with \"node-a\""),
        "{}",
        err.message
    );
    claims
        .patch_status("c", &apply("node-b").force(), &steal)
        .await
        .unwrap();

    // node-a stops applying its entry; node-b now owns its interfaceName, so the entry stays
    // but node-a's other fields go.
    let after = claims
        .patch_status("c", &apply("node-a"), &Patch::Apply(apply_status(vec![])))
        .await
        .unwrap();
    let devices = after.status.unwrap().devices.unwrap();
    let eth1 = devices.iter().find(|d| d.device == "eth1").unwrap();
    assert_eq!(
        eth1.network_data
            .as_ref()
            .unwrap()
            .interface_name
            .as_deref(),
        Some("stolen")
    );
    assert!(
        eth1.conditions.is_none(),
        "node-a's conditions removed: {eth1:?}"
    );
    assert!(
        eth1.network_data.as_ref().unwrap().ips.is_none(),
        "node-a's ips removed: {eth1:?}"
    );

    // node-b drops eth2: nobody else owns it, so the entry goes.
    let last = claims
        .patch_status(
            "c",
            &apply("node-b"),
            &Patch::Apply(apply_status(vec![stolen])),
        )
        .await
        .unwrap();
    let names: Vec<String> = last
        .status
        .unwrap()
        .devices
        .unwrap()
        .into_iter()
        .map(|d| d.device)
        .collect();
    assert_eq!(names, ["eth1"]);
    server.shutdown().await;
}

#[tokio::test]
async fn claim_status_validation() {
    let server = ApiServer::start().await.unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "default");
    let mut c = claims
        .create(&PostParams::default(), &claim("c"))
        .await
        .unwrap();
    c.status = Some(serde_json::from_value(allocated_status(&["eth1"])).unwrap());
    claims
        .replace_status("c", &PostParams::default(), &c)
        .await
        .unwrap();
    let pp = PatchParams::apply("node-a");

    let not_allocated = apply_status(vec![device_status("eth9", "net1")]);
    let err = api_status(
        claims
            .patch_status("c", &pp, &Patch::Apply(not_allocated))
            .await,
    );
    assert_eq!(err.code, 422);
    assert!(err.message.contains("status.devices[0]"), "{}", err.message);

    let mut bad_ip = device_status("eth1", "net1");
    bad_ip["networkData"]["ips"] = json!(["192.0.2.10"]);
    let err = api_status(
        claims
            .patch_status("c", &pp, &Patch::Apply(apply_status(vec![bad_ip])))
            .await,
    );
    assert!(
        err.message.contains("status.devices[0].networkData.ips[0]"),
        "{}",
        err.message
    );

    let mut many_ips = device_status("eth1", "net1");
    many_ips["networkData"]["ips"] = (0..17).map(|i| json!(format!("192.0.2.{i}/24"))).collect();
    let err = api_status(
        claims
            .patch_status("c", &pp, &Patch::Apply(apply_status(vec![many_ips])))
            .await,
    );
    assert!(err.message.contains("Too many: 17"), "{}", err.message);

    let mut long_name = device_status("eth1", "net1");
    long_name["networkData"]["interfaceName"] = json!("x".repeat(257));
    let err = api_status(
        claims
            .patch_status("c", &pp, &Patch::Apply(apply_status(vec![long_name])))
            .await,
    );
    assert!(err.message.contains("interfaceName"), "{}", err.message);

    let mut conditions = device_status("eth1", "net1");
    conditions["conditions"] = (0..9)
        .map(|i| {
            json!({ "type": format!("T{i}"), "status": "True", "reason": "R", "message": "",
                          "lastTransitionTime": "2026-01-01T00:00:00Z" })
        })
        .collect();
    let err = api_status(
        claims
            .patch_status("c", &pp, &Patch::Apply(apply_status(vec![conditions])))
            .await,
    );
    assert!(
        err.message.contains("conditions: Too many: 9"),
        "{}",
        err.message
    );

    let mut big = device_status("eth1", "net1");
    big["data"] = json!({ "blob": "x".repeat(11 * 1024) });
    let err = api_status(
        claims
            .patch_status("c", &pp, &Patch::Apply(apply_status(vec![big])))
            .await,
    );
    assert!(err.message.contains("data"), "{}", err.message);

    // Nothing was stored by the rejected writes.
    assert!(
        claims
            .get("c")
            .await
            .unwrap()
            .status
            .unwrap()
            .devices
            .is_none()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn merge_patch_and_events() {
    let server = ApiServer::start().await.unwrap();
    let nodes: Api<Node> = Api::all(server.client());
    nodes
        .create(&PostParams::default(), &node("n"))
        .await
        .unwrap();
    let patched = nodes
        .patch(
            "n",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "a": "b" } } })),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["a"], "b");
    let unlabelled = nodes
        .patch(
            "n",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "a": null } } })),
        )
        .await
        .unwrap();
    assert!(unlabelled.metadata.labels.unwrap_or_default().is_empty());

    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(server.client(), "default");
    let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": { "name": "e1" }, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reason": "Attached", "action": "Attach", "type": "Normal",
        "reportingController": "netclaim.dev", "reportingInstance": "node-a",
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    assert_eq!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn faults_inject_failures_conflicts_and_count() {
    let server = ApiServer::start().await.unwrap();
    let faults = server.faults();
    let nodes: Api<Node> = Api::all(server.client_without_retries());
    faults.fail_next("POST", "nodes", 2, 500);
    for _ in 0..2 {
        let err = api_status(nodes.create(&PostParams::default(), &node("n")).await);
        assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    }
    nodes
        .create(&PostParams::default(), &node("n"))
        .await
        .unwrap();
    assert_eq!(faults.request_count("POST", "nodes"), 3);

    faults.conflict_next("nodes", 1);
    let err = api_status(
        nodes
            .patch("n", &PatchParams::default(), &Patch::Merge(json!({})))
            .await,
    );
    assert_eq!(err.code, 409);
    nodes
        .patch("n", &PatchParams::default(), &Patch::Merge(json!({})))
        .await
        .unwrap();

    faults.fail_next("*", "*", 1, 429);
    let err = api_status(nodes.get("n").await);
    assert_eq!(err.code, 429);
    nodes.get("n").await.unwrap();
    assert_eq!(faults.request_count("GET", "nodes"), 2);
    assert_eq!(faults.request_count("*", "*"), 7);

    // The default kube client retries 503 by itself: the failures are invisible but counted.
    faults.fail_next("GET", "nodes", 2, 503);
    Api::<Node>::all(server.client()).get("n").await.unwrap();
    assert_eq!(faults.request_count("GET", "nodes"), 5);

    faults.set_latency(Duration::from_millis(1));
    nodes.get("n").await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn kubeconfig_points_a_client_at_the_server() {
    let server = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let nodes: Api<Node> = Api::all(client);
    assert!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn finalizers_delay_deletion_and_apply_creates() {
    let server = ApiServer::start().await.unwrap();
    let nodes: Api<Node> = Api::all(server.client());
    let mut n = node("n");
    n.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    nodes.create(&PostParams::default(), &n).await.unwrap();
    nodes.delete("n", &DeleteParams::default()).await.unwrap();
    let pending = nodes.get("n").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    let release = json!({ "metadata": { "finalizers": null } });
    nodes
        .patch("n", &PatchParams::default(), &Patch::Merge(release))
        .await
        .unwrap();
    assert_eq!(api_status(nodes.get("n").await).code, 404);

    // Server-side apply on a missing object creates it, owned by the applier.
    let applied = json!({ "apiVersion": "v1", "kind": "Node",
                          "metadata": { "name": "m", "labels": { "a": "b" } } });
    let created = nodes
        .patch("m", &PatchParams::apply("tester"), &Patch::Apply(applied))
        .await
        .unwrap();
    let managed = created.metadata.managed_fields.unwrap();
    assert_eq!(managed[0].manager.as_deref(), Some("tester"));
    assert_eq!(created.metadata.labels.unwrap()["a"], "b");

    // Cluster-scoped types have no namespaced paths; unknown resources are 404.
    let nads: Api<kube::api::DynamicObject> = Api::namespaced_with(
        server.client(),
        "default",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(
                "k8s.cni.cncf.io",
                "v1",
                "NetworkAttachmentDefinition",
            ),
            "network-attachment-definitions",
        ),
    );
    let nad: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": { "name": "macvlan" }, "spec": { "config": "{\"cniVersion\":\"1.0.0\"}" }
    }))
    .unwrap();
    nads.create(&PostParams::default(), &nad).await.unwrap();
    let read = nads.get("macvlan").await.unwrap();
    assert_eq!(read.data["spec"], nad.data["spec"]);
    assert_eq!(read.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(api_status(nads.get("absent").await).code, 404);
    let mut bad = nad.clone();
    bad.metadata.name = Some("bad".into());
    bad.data["spec"]["config"] = json!({ "not": "a string" });
    assert_eq!(
        api_status(nads.create(&PostParams::default(), &bad).await).code,
        422
    );
    server.shutdown().await;
}

/// Sends a JSON patch through the kube client's raw request path.
async fn json_patch_node(client: &kube::Client, name: &str, ops: Value) -> kube::Result<Node> {
    let request = http::Request::patch(format!("/api/v1/nodes/{name}"))
        .header("content-type", "application/json-patch+json")
        .body(serde_json::to_vec(&ops).unwrap())
        .unwrap();
    client.request::<Node>(request).await
}

#[tokio::test]
async fn json_patch_with_test_operation() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(&PostParams::default(), &node("n"))
        .await
        .unwrap();
    let ops = json!([
        { "op": "add", "path": "/metadata/labels", "value": { "a": "1" } },
        { "op": "replace", "path": "/metadata/labels/a", "value": "2" },
    ]);
    let patched = json_patch_node(&client, "n", ops).await.unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["a"], "2");
    let failing = json!([{ "op": "test", "path": "/metadata/labels/a", "value": "1" }]);
    let err = api_status(json_patch_node(&client, "n", failing).await);
    assert_eq!(err.code, 422);
    server.shutdown().await;
}

/// A shared device: `allowMultipleAllocations` and one capacity with `policy`.
fn shared_device(value: &str, policy: Value) -> Value {
    json!({
        "name": "d",
        "allowMultipleAllocations": true,
        "attributes": { "shared": { "bool": true } },
        "capacity": { "netclaim.dev/children": { "value": value, "requestPolicy": policy } },
    })
}

#[tokio::test]
async fn slice_validation_enforces_consumable_capacity_rules() {
    // DRAConsumableCapacity is on by default from 1.36.
    let server = ApiServer::start_with(ApiServerOptions::kubernetes(36))
        .await
        .unwrap();
    let cases: Vec<(Value, &str)> = vec![
        (
            {
                let mut d = shared_device("4", json!({ "default": "1", "validValues": ["1"] }));
                d.as_object_mut()
                    .unwrap()
                    .remove("allowMultipleAllocations");
                d
            },
            "requestPolicy: Forbidden: allowMultipleAllocations must be true",
        ),
        (
            shared_device("4", json!({ "validValues": ["1"] })),
            "requestPolicy.default: Required value",
        ),
        (
            shared_device("4", json!({ "default": "2", "validValues": ["1"] })),
            "default value is not valid according to the requestPolicy",
        ),
        (
            shared_device("4", json!({ "default": "1", "validValues": ["2", "1"] })),
            "validValues[1]: Invalid value: \"1\": values must be sorted in ascending order",
        ),
        (
            shared_device("4", json!({ "default": "1", "validValues": ["1", "1"] })),
            "validValues[1]: Duplicate value",
        ),
        (
            shared_device("4", json!({ "default": "1", "validValues": ["1", "8"] })),
            "option is larger than capacity value",
        ),
        (
            shared_device(
                "100",
                json!({ "default": "1", "validValues": (1..=11).map(|i| i.to_string()).collect::<Vec<_>>() }),
            ),
            "validValues: Too many: 11",
        ),
        (
            shared_device(
                "4",
                json!({ "default": "1", "validValues": ["1"], "validRange": { "min": "1" } }),
            ),
            "cannot specify \"validValues\" and \"validRange\" at the same time",
        ),
        (
            shared_device("4", json!({ "default": "1", "validRange": { "min": "2" } })),
            "default is less than min",
        ),
        (
            shared_device(
                "4",
                json!({ "default": "2", "validRange": { "min": "1", "max": "8" } }),
            ),
            "max is larger than capacity value",
        ),
        (
            shared_device(
                "8",
                json!({ "default": "2", "validRange": { "min": "1", "step": "2" } }),
            ),
            "value is not a multiple of a given step",
        ),
        (
            shared_device("many", json!({ "default": "1", "validValues": ["1"] })),
            "capacity[netclaim.dev/children].value: Invalid value",
        ),
        (
            json!({ "name": "d", "allowMultipleAllocations": "yes" }),
            "allowMultipleAllocations: Invalid value",
        ),
    ];
    for (device, wanted) in cases {
        let err = rejected_slice(&server, slice_json("s", "n", vec![device.clone()])).await;
        assert!(
            err.message.contains(wanted),
            "{device}: want {wanted:?} in {}",
            err.message
        );
    }

    // What netclaim publishes for a shared parent, and a valid range, are accepted.
    let devices = vec![
        shared_device("16", json!({ "default": "1", "validValues": ["1"] })),
        {
            let mut d = shared_device(
                "8",
                json!({ "default": "3", "validRange": { "min": "1", "max": "7", "step": "2" } }),
            );
            d["name"] = json!("e");
            d
        },
        json!({ "name": "f", "capacity": { "netclaim.dev/children": { "value": "4" } } }),
    ];
    let ok: ResourceSlice = serde_json::from_value(slice_json("ok", "n", devices)).unwrap();
    Api::<ResourceSlice>::all(server.client())
        .create(&PostParams::default(), &ok)
        .await
        .unwrap();
    server.shutdown().await;
}

// ---- DRAConsumableCapacity off (1.34, 1.35): gated fields are dropped, not refused ------

#[tokio::test]
async fn with_consumable_capacity_off_its_fields_are_dropped_on_write() {
    let server = ApiServer::start().await.unwrap();
    let version = server.client().apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );
    // A slice: allowMultipleAllocations and requestPolicy go, the capacity value stays. An
    // invalid policy is not even looked at: it is dropped before validation.
    let slices: Api<ResourceSlice> = Api::all(server.client());
    let bad_policy = shared_device("4", json!({ "default": "9", "validValues": ["1"] }));
    let stored = slices
        .create(
            &PostParams::default(),
            &slice("s", "node-a", vec![bad_policy]),
        )
        .await
        .unwrap();
    let device = &stored.spec.devices.unwrap()[0];
    assert_eq!(device.allow_multiple_allocations, None);
    let capacity = &device.capacity.as_ref().unwrap()["netclaim.dev/children"];
    assert_eq!(capacity.value.0, "4");
    assert!(capacity.request_policy.is_none());

    // A claim: capacity requests in the spec, shareID and consumedCapacity in the
    // allocation, shareID in status.devices.
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "default");
    let mut c: ResourceClaim = serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": { "name": "c" },
        "spec": { "devices": { "requests": [{ "name": "nic", "exactly": {
            "deviceClassName": "netclaim.dev",
            "capacity": { "requests": { "netclaim.dev/children": "1" } } } }] } }
    }))
    .unwrap();
    let created = claims.create(&PostParams::default(), &c).await.unwrap();
    let request = &created
        .spec
        .as_ref()
        .unwrap()
        .devices
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()[0];
    assert!(request.exactly.as_ref().unwrap().capacity.is_none());
    c = created;
    let share = "7f3c0e52-1c9b-4d8e-9d3a-3d0c6f1b2a90";
    c.status = Some(
        serde_json::from_value(json!({ "allocation": { "devices": { "results": [{
            "request": "nic", "driver": DRIVER, "pool": "node-a", "device": "eth1",
            "shareID": share, "consumedCapacity": { "netclaim.dev/children": "1" } }] } } }))
        .unwrap(),
    );
    let allocated = claims
        .replace_status("c", &PostParams::default(), &c)
        .await
        .unwrap();
    let result = &allocated
        .status
        .unwrap()
        .allocation
        .unwrap()
        .devices
        .unwrap()
        .results
        .unwrap()[0];
    assert_eq!(
        (result.share_id.as_ref(), result.consumed_capacity.as_ref()),
        (None, None)
    );
    let mut with_share = device_status("eth1", "net1");
    with_share["shareID"] = json!(share);
    let applied = claims
        .patch_status(
            "c",
            &PatchParams::apply("node-a"),
            &Patch::Apply(apply_status(vec![with_share])),
        )
        .await
        .unwrap();
    let devices = applied.status.unwrap().devices.unwrap();
    assert_eq!(devices[0].share_id, None);
    server.shutdown().await;
}

#[tokio::test]
async fn with_consumable_capacity_on_its_fields_are_kept() {
    let server =
        ApiServer::start_with(ApiServerOptions::kubernetes(34).with_dra_consumable_capacity(true))
            .await
            .unwrap();
    let slices: Api<ResourceSlice> = Api::all(server.client());
    let shared = shared_device("4", json!({ "default": "1", "validValues": ["1"] }));
    let stored = slices
        .create(&PostParams::default(), &slice("s", "node-a", vec![shared]))
        .await
        .unwrap();
    let device = &stored.spec.devices.unwrap()[0];
    assert_eq!(device.allow_multiple_allocations, Some(true));
    assert!(
        device.capacity.as_ref().unwrap()["netclaim.dev/children"]
            .request_policy
            .is_some()
    );
    server.shutdown().await;
}

// ---- status.devices[]: conditions and data ---------------------------------------------

/// A claim `c` allocated `eth1`, and what applying `entry` as its only status entry says.
async fn apply_device_entry(entry: Value) -> Status {
    let server = ApiServer::start().await.unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "default");
    let mut c = claims
        .create(&PostParams::default(), &claim("c"))
        .await
        .unwrap();
    c.status = Some(serde_json::from_value(allocated_status(&["eth1"])).unwrap());
    claims
        .replace_status("c", &PostParams::default(), &c)
        .await
        .unwrap();
    let err = api_status(
        claims
            .patch_status(
                "c",
                &PatchParams::apply("node-a"),
                &Patch::Apply(apply_status(vec![entry])),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (422, "Invalid"),
        "{}",
        err.message
    );
    server.shutdown().await;
    err
}

fn with_condition(condition: Value) -> Value {
    let mut entry = device_status("eth1", "net1");
    entry["conditions"] = json!([condition]);
    entry
}

fn ready(changes: Value) -> Value {
    let mut condition = json!({ "type": "Ready", "status": "True", "reason": "NetworkReady",
                                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z" });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            condition.as_object_mut().unwrap().remove(key);
        } else {
            condition[key] = value.clone();
        }
    }
    condition
}

#[tokio::test]
async fn conditions_are_validated_as_metav1_conditions() {
    let path = "status.devices[0].conditions[0]";
    let cases = [
        (
            ready(json!({ "status": "Maybe" })),
            format!(
                "{path}.status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\""
            ),
        ),
        (
            ready(json!({ "lastTransitionTime": null })),
            format!("{path}.lastTransitionTime: Required value: must be set"),
        ),
        (
            ready(json!({ "reason": null })),
            format!("{path}.reason: Required value: must be set"),
        ),
        (
            ready(json!({ "reason": "Not ready" })),
            format!(
                "{path}.reason: Invalid value: \"Not ready\": a condition reason must start with alphabetic character"
            ),
        ),
        (
            ready(json!({ "reason": "Ends_with_colon:" })),
            format!("{path}.reason: Invalid value: \"Ends_with_colon:\""),
        ),
        (
            ready(json!({ "reason": format!("R{}", "x".repeat(1024)) })),
            format!("{path}.reason: Too long: may not be more than 1024 bytes"),
        ),
        (
            ready(json!({ "message": "m".repeat(32 * 1024 + 1) })),
            format!("{path}.message: Too long: may not be more than 32768 bytes"),
        ),
        (
            ready(json!({ "type": "not a type" })),
            format!(
                "{path}.type: Invalid value: \"not a type\": name part must consist of alphanumeric characters"
            ),
        ),
        (
            ready(json!({ "type": "" })),
            format!("{path}.type: Invalid value: \"\": name part must be non-empty"),
        ),
        (
            ready(json!({ "observedGeneration": -1 })),
            format!(
                "{path}.observedGeneration: Invalid value: -1: must be greater than or equal to zero"
            ),
        ),
    ];
    for (condition, wanted) in cases {
        let err = apply_device_entry(with_condition(condition.clone())).await;
        assert!(
            err.message.contains(&wanted),
            "{condition}: want {wanted:?} in {}",
            err.message
        );
    }
    // Good reasons and a prefixed type pass the same checks (a write that is stored).
    let server = ApiServer::start().await.unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "default");
    let mut c = claims
        .create(&PostParams::default(), &claim("c"))
        .await
        .unwrap();
    c.status = Some(serde_json::from_value(allocated_status(&["eth1"])).unwrap());
    claims
        .replace_status("c", &PostParams::default(), &c)
        .await
        .unwrap();
    let mut entry = device_status("eth1", "net1");
    entry["conditions"] = json!([
        ready(json!({ "reason": "A" })),
        ready(json!({ "type": "netclaim.dev/Attached", "reason": "Reason_A,ReasonB:C_" })),
    ]);
    claims
        .patch_status(
            "c",
            &PatchParams::apply("node-a"),
            &Patch::Apply(apply_status(vec![entry])),
        )
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn duplicate_condition_types_are_refused() {
    let mut entry = device_status("eth1", "net1");
    entry["conditions"] = json!([ready(json!({})), ready(json!({ "status": "False" }))]);
    let err = apply_device_entry(entry).await;
    assert!(
        err.message
            .contains("status.devices[0].conditions[1].type: Duplicate value: \"Ready\""),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn device_data_must_be_a_json_object() {
    for data in [json!("a string"), json!([1, 2]), json!(7)] {
        let mut entry = device_status("eth1", "net1");
        entry["data"] = data.clone();
        let err = apply_device_entry(entry).await;
        assert!(
            err.message.contains(
                "status.devices[0].data: Invalid value: \"<value omitted>\": must be a valid JSON object"
            ),
            "{data}: {}",
            err.message
        );
    }
}

// ---- status.allocation and status.reservedFor -------------------------------------------

#[tokio::test]
async fn an_allocation_cannot_change_once_set_only_go_with_its_reservations() {
    let server = ApiServer::start().await.unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "default");
    let mut c = claims
        .create(&PostParams::default(), &claim("c"))
        .await
        .unwrap();
    let mut status = allocated_status(&["eth1"]);
    status["reservedFor"] = json!([{ "resource": "pods", "name": "p", "uid": "uid-p" }]);
    c.status = Some(serde_json::from_value(status).unwrap());
    let allocated = claims
        .replace_status("c", &PostParams::default(), &c)
        .await
        .unwrap();
    claims
        .patch_status(
            "c",
            &PatchParams::apply("node-a"),
            &Patch::Apply(apply_status(vec![device_status("eth1", "net1")])),
        )
        .await
        .unwrap();

    // Another device: refused.
    let moved = json!({ "status": { "allocation": allocated_status(&["eth2"])["allocation"] } });
    let err = api_status(
        claims
            .patch_status("c", &PatchParams::default(), &Patch::Merge(&moved))
            .await,
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("status.allocation: Invalid value: \"{...}\": field is immutable"),
        "{}",
        err.message
    );
    // Clearing the allocation while the claim is reserved: refused.
    let cleared = json!({ "status": { "allocation": null } });
    let err = api_status(
        claims
            .patch_status("c", &PatchParams::default(), &Patch::Merge(&cleared))
            .await,
    );
    assert!(
        err.message.contains(
            "status.reservedFor: Forbidden: may not be specified when `allocated` is not set"
        ),
        "{}",
        err.message
    );
    // Both together: allowed, and the deallocated device's status entry goes with them.
    let deallocated = json!({ "status": { "allocation": null, "reservedFor": null } });
    let after = claims
        .patch_status("c", &PatchParams::default(), &Patch::Merge(&deallocated))
        .await
        .unwrap();
    let status = after.status.unwrap();
    assert!(status.allocation.is_none() && status.reserved_for.is_none());
    assert!(status.devices.is_none(), "{:?}", status.devices);
    assert_ne!(
        allocated.metadata.resource_version,
        after.metadata.resource_version
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_new_allocation_is_validated() {
    // 1.36: with DRAConsumableCapacity off, a shareID would be dropped before validation.
    let server = ApiServer::start_with(ApiServerOptions::kubernetes(36))
        .await
        .unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "default");
    claims
        .create(&PostParams::default(), &claim("c"))
        .await
        .unwrap();
    let results = |result: Value| json!({ "status": { "allocation": { "devices": { "results": [result] } } } });
    let base = json!({ "request": "nic", "driver": DRIVER, "pool": "node-a", "device": "eth1" });
    let with = |key: &str, value: Value| {
        let mut result = base.clone();
        result[key] = value;
        results(result)
    };
    let path = "status.allocation.devices.results[0]";
    let cases = [
        (
            with("request", json!("other")),
            format!("{path}.request: Invalid value: \"other\": must be the name of a request in the claim"),
        ),
        (
            with("device", json!("Eth_1")),
            format!("{path}.device: Invalid value: \"Eth_1\": a lowercase RFC 1123 label"),
        ),
        (
            with("shareID", json!("not-a-uid")),
            format!("{path}.shareID: Invalid value: \"not-a-uid\": uid must be in RFC 4122 normalized form"),
        ),
        (
            with("driver", json!("")),
            format!("{path}.driver: Required value"),
        ),
        (
            json!({ "status": { "allocation": { "devices": {
                "results": [base.clone()],
                "config": [{ "source": "FromClaim", "requests": ["nic"],
                             "opaque": { "driver": DRIVER, "parameters": "text" } }] } } } }),
            "status.allocation.devices.config[0].opaque.parameters: Invalid value: \"<value omitted>\": must be a valid JSON object".to_owned(),
        ),
        (
            json!({ "status": { "allocation": { "devices": {
                "results": [base.clone()],
                "config": [{ "source": "FromNowhere",
                             "opaque": { "driver": DRIVER, "parameters": {} } }] } } } }),
            "status.allocation.devices.config[0].source: Unsupported value: \"FromNowhere\"".to_owned(),
        ),
        (
            json!({ "status": { "reservedFor": [{ "resource": "pods", "name": "p", "uid": "u" }] } }),
            "status.reservedFor: Forbidden: may not be specified when `allocated` is not set".to_owned(),
        ),
    ];
    for (patch, wanted) in cases {
        let err = api_status(
            claims
                .patch_status("c", &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        );
        assert_eq!(err.code, 422, "{patch}: {}", err.message);
        assert!(
            err.message.contains(&wanted),
            "{patch}: want {wanted:?} in {}",
            err.message
        );
    }
    // Nothing stuck: the valid one goes in.
    claims
        .patch_status("c", &PatchParams::default(), &Patch::Merge(&results(base)))
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn reservations_are_validated() {
    let server = ApiServer::start().await.unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(server.client(), "default");
    claims
        .create(&PostParams::default(), &claim("c"))
        .await
        .unwrap();
    let mut status = allocated_status(&["eth1"]);
    status["reservedFor"] = json!([
        { "resource": "pods", "name": "p", "uid": "u1" },
        { "resource": "pods", "name": "q", "uid": "u1" },
        { "resource": "pods", "name": "r" },
    ]);
    let err = api_status(
        claims
            .patch_status(
                "c",
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await,
    );
    for wanted in [
        "status.reservedFor[1]: Duplicate value: \"u1\"",
        "status.reservedFor[2].uid: Required value",
    ] {
        assert!(
            err.message.contains(wanted),
            "want {wanted:?} in {}",
            err.message
        );
    }
    server.shutdown().await;
}

// ---- field ownership of updates ---------------------------------------------------------

#[tokio::test]
async fn updates_take_ownership_so_a_later_apply_conflicts() {
    let server = ApiServer::start().await.unwrap();
    let nodes: Api<Node> = Api::all(server.client());
    nodes
        .create(
            &PostParams {
                field_manager: Some("creator".into()),
                ..PostParams::default()
            },
            &node("n"),
        )
        .await
        .unwrap();
    let labelled = nodes
        .patch(
            "n",
            &PatchParams {
                field_manager: Some("labeller".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "metadata": { "labels": { "team": "a" } } })),
        )
        .await
        .unwrap();
    let entry = labelled
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|e| e.manager.as_deref() == Some("labeller"))
        .unwrap();
    assert_eq!(entry.operation.as_deref(), Some("Update"));
    assert!(
        entry.fields_v1.unwrap().0["f:metadata"]["f:labels"]
            .get("f:team")
            .is_some(),
        "the merge patch owns the label it set"
    );

    // An applier that changes the label conflicts with the patch's owner.
    let apply = json!({ "apiVersion": "v1", "kind": "Node",
                        "metadata": { "name": "n", "labels": { "team": "b" } } });
    let err = api_status(
        nodes
            .patch("n", &PatchParams::apply("applier"), &Patch::Apply(&apply))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message
            .contains("conflict with \"labeller\" using v1: .metadata.labels.team"),
        "{}",
        err.message
    );
    // Applying the same value shares it; forcing takes it.
    let same = json!({ "apiVersion": "v1", "kind": "Node",
                       "metadata": { "name": "n", "labels": { "team": "a" } } });
    nodes
        .patch("n", &PatchParams::apply("applier"), &Patch::Apply(&same))
        .await
        .unwrap();
    let forced = nodes
        .patch(
            "n",
            &PatchParams::apply("applier").force(),
            &Patch::Apply(&apply),
        )
        .await
        .unwrap();
    assert_eq!(forced.metadata.labels.unwrap()["team"], "b");
    // A later update takes the field back without a conflict: updates never conflict.
    nodes
        .patch(
            "n",
            &PatchParams {
                field_manager: Some("labeller".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "metadata": { "labels": { "team": "c" } } })),
        )
        .await
        .unwrap();
    let err = api_status(
        nodes
            .patch("n", &PatchParams::apply("applier"), &Patch::Apply(&apply))
            .await,
    );
    assert!(
        err.message.contains("conflict with \"labeller\""),
        "{}",
        err.message
    );
    server.shutdown().await;
}

// ---- field selectors per type ------------------------------------------------------------

async fn list_error<K>(api: &Api<K>, selector: &str) -> Status
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api_status(api.list(&ListParams::default().fields(selector)).await)
}

#[tokio::test]
async fn each_type_accepts_only_its_own_field_selectors() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    for (name, node_name) in [("p1", "node-a"), ("p2", "node-b")] {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
            "spec": { "nodeName": node_name, "containers": [{ "name": "c", "image": "i" }] }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let on_a = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a,spec.hostNetwork=false"))
        .await
        .unwrap();
    assert_eq!(on_a.items.len(), 1);
    assert_eq!(on_a.items[0].metadata.name.as_deref(), Some("p1"));
    let err = list_error(&pods, "spec.containers=c").await;
    assert_eq!(
        (err.code, err.message.as_str()),
        (400, "field label not supported: spec.containers")
    );

    let nodes: Api<Node> = Api::all(server.client());
    nodes
        .create(&PostParams::default(), &node("n"))
        .await
        .unwrap();
    let schedulable = nodes
        .list(&ListParams::default().fields("spec.unschedulable=false"))
        .await
        .unwrap();
    assert_eq!(schedulable.items.len(), 1);
    let err = list_error(&nodes, "metadata.namespace=default").await;
    assert_eq!(
        (err.code, err.message.as_str()),
        (400, "field label not supported: metadata.namespace")
    );

    let slices: Api<ResourceSlice> = Api::all(server.client());
    let err = list_error(&slices, "metadata.namespace=default").await;
    assert_eq!(err.code, 400, "{}", err.message);

    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(server.client(), "default");
    let event: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": { "name": "e1" }, "reason": "Attached", "type": "Normal",
        "involvedObject": { "kind": "ResourceClaim", "name": "c", "namespace": "default" },
        "source": { "component": "netclaim" },
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    let about_c = events
        .list(&ListParams::default().fields("involvedObject.name=c,source=netclaim"))
        .await
        .unwrap();
    assert_eq!(about_c.items.len(), 1);
    let err = list_error(&events, "regarding.name=c").await;
    assert_eq!(err.code, 400, "{}", err.message);
    server.shutdown().await;
}
