//! The pod network-status writer (`driver/src/network_status.rs` through
//! `driver/src/level_writer.rs`) against the API server stand-in, with the real kube client:
//! conflicts are retried from a fresh read, other writers' entries are kept, a recreated or
//! missing pod gets nothing, and an outage of any length ends with the annotation as
//! desired.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use netclaim::level_writer::{Backoff, LevelWriter};
use netclaim::network_status::{
    AnnotationApply, NETWORK_STATUS_ANNOTATION, NetworkStatusEntry, PodNetworks,
};
use netclaim::state::PodRef;
use netclaim_test::apiserver::ApiServer;
use serde_json::{Value, json};

const PRIMARY: &str =
    r#"[{"name":"cbr0","interface":"eth0","ips":["198.51.100.7"],"default":true}]"#;

fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
    }
}

async fn create_pod(pods: &Api<Pod>, name: &str, annotation: &str) -> PodRef {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "annotations": { NETWORK_STATUS_ANNOTATION: annotation } },
        "spec": { "containers": [{ "name": "app", "image": "app" }] }
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    PodRef {
        namespace: "default".into(),
        name: name.into(),
        uid: created.metadata.uid.unwrap(),
    }
}

async fn annotation(pods: &Api<Pod>, name: &str) -> Value {
    let pod = pods.get(name).await.unwrap();
    let text = pod.metadata.annotations.unwrap()[NETWORK_STATUS_ANNOTATION].clone();
    serde_json::from_str(&text).unwrap()
}

fn net1(pod: &PodRef, ip: Option<&str>) -> PodNetworks {
    let entries: BTreeMap<String, NetworkStatusEntry> = ip
        .map(|ip| {
            let entry = NetworkStatusEntry::from_static(
                "default/nic-a",
                "net1",
                &[ip.parse().unwrap()],
                Some("02:00:00:00:00:01"),
                None,
            );
            ("net1".to_owned(), entry)
        })
        .into_iter()
        .collect();
    PodNetworks {
        pod: pod.clone(),
        owned: BTreeSet::from(["net1".to_owned()]),
        entries,
    }
}

fn writer(server: &ApiServer) -> Arc<LevelWriter<String, PodNetworks>> {
    LevelWriter::start(
        AnnotationApply::new(server.client_without_retries()),
        quick_backoff(),
    )
}

#[tokio::test]
async fn a_conflict_is_retried_and_other_entries_are_kept() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let pod = create_pod(&pods, "web", PRIMARY).await;
    let writer = writer(&server);

    server.faults().conflict_next("pods", 2);
    writer.set(pod.uid.clone(), net1(&pod, Some("192.0.2.30/24")));
    assert!(writer.flush(Duration::from_secs(10)).await);
    // Two refused patches, one that landed, each after a fresh read.
    assert_eq!(server.faults().request_count("PATCH", "pods"), 3);
    assert_eq!(server.faults().request_count("GET", "pods"), 3);
    let written = annotation(&pods, "web").await;
    assert_eq!(written[0]["name"], "cbr0", "{written}");
    assert_eq!(written[1]["interface"], "net1", "{written}");
    assert_eq!(written[1]["ips"], json!(["192.0.2.30"]), "{written}");

    writer.set(pod.uid.clone(), net1(&pod, None));
    assert!(writer.flush(Duration::from_secs(10)).await);
    assert_eq!(
        annotation(&pods, "web").await,
        serde_json::from_str::<Value>(PRIMARY).unwrap()
    );
}

#[tokio::test]
async fn a_recreated_or_missing_pod_gets_nothing() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let old = create_pod(&pods, "web", PRIMARY).await;
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    let new = create_pod(&pods, "web", PRIMARY).await;
    assert_ne!(old.uid, new.uid);
    let writer = writer(&server);

    writer.set(old.uid.clone(), net1(&old, Some("192.0.2.31/24")));
    let gone = PodRef {
        name: "gone".into(),
        uid: "uid-of-a-pod-that-never-was".into(),
        ..new.clone()
    };
    writer.set(gone.uid.clone(), net1(&gone, Some("192.0.2.32/24")));
    assert!(writer.flush(Duration::from_secs(10)).await);
    assert_eq!(
        annotation(&pods, "web").await,
        serde_json::from_str::<Value>(PRIMARY).unwrap(),
        "the recreated pod got its predecessor's entry"
    );
    assert_eq!(server.faults().request_count("PATCH", "pods"), 0);
    assert!(pods.get_opt("gone").await.unwrap().is_none());
    assert_eq!(writer.backlog(), 0, "gone pods are not retried");
}

/// An outage far longer than any retry budget: the writer never gives up, and when the API
/// is back the annotation says what the node wants now (the last state set during the
/// outage), not what it wanted when the outage began.
#[tokio::test]
async fn after_a_long_outage_the_latest_state_is_written() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let pod = create_pod(&pods, "web", PRIMARY).await;
    let writer = writer(&server);

    server.faults().fail_next("*", "pods", usize::MAX, 503);
    writer.set(pod.uid.clone(), net1(&pod, Some("192.0.2.40/24")));
    // Ride out at least 200 failed attempts, then change the desired state.
    let failed = || server.faults().request_count("GET", "pods");
    while failed() < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.set(pod.uid.clone(), net1(&pod, Some("192.0.2.41/24")));
    assert_eq!(writer.backlog(), 1);
    server.faults().clear_failures();
    assert!(writer.flush(Duration::from_secs(10)).await);
    let written = annotation(&pods, "web").await;
    assert_eq!(written[1]["ips"], json!(["192.0.2.41"]), "{written}");
    assert_eq!(server.faults().request_count("PATCH", "pods"), 1);
}
