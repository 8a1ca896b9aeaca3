//! The pod network-status writer (`driver/src/network_status.rs`) against the API server
//! stand-in, through the real kube client: conflicts are retried from a fresh read, other
//! writers' entries are kept, a recreated or missing pod gets nothing.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use netclaim::cni::{NETWORK_STATUS_ANNOTATION, NetworkStatusEntry, PodRef};
use netclaim::network_status::NetworkStatusWriter;
use netclaim::status::Backoff;
use netclaim_test::apiserver::ApiServer;
use serde_json::{Value, json};

const PRIMARY: &str =
    r#"[{"name":"cbr0","interface":"eth0","ips":["198.51.100.7"],"default":true}]"#;

fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
        attempts: 6,
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

fn net1(ip: &str) -> NetworkStatusEntry {
    NetworkStatusEntry::from_static(
        "default/nic-a",
        "net1",
        &[ip.parse().unwrap()],
        Some("02:00:00:00:00:01"),
        None,
    )
}

#[tokio::test]
async fn a_conflict_is_retried_and_other_entries_are_kept() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let pod = create_pod(&pods, "web", PRIMARY).await;
    let writer = NetworkStatusWriter::start(server.client_without_retries(), quick_backoff());

    server.faults().conflict_next("pods", 2);
    writer.publish(&pod, vec![net1("192.0.2.30/24")]);
    writer.flush().await;
    // Two refused patches, one that landed, each after a fresh read.
    assert_eq!(server.faults().request_count("PATCH", "pods"), 3);
    assert_eq!(server.faults().request_count("GET", "pods"), 3);
    let written = annotation(&pods, "web").await;
    assert_eq!(written[0]["name"], "cbr0", "{written}");
    assert_eq!(written[1]["interface"], "net1", "{written}");
    assert_eq!(written[1]["ips"], json!(["192.0.2.30"]), "{written}");

    writer.withdraw(&pod, &["net1"]);
    writer.flush().await;
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
    let writer = NetworkStatusWriter::start(server.client_without_retries(), quick_backoff());

    writer.publish(&old, vec![net1("192.0.2.31/24")]);
    let gone = PodRef {
        name: "gone".into(),
        ..new.clone()
    };
    writer.publish(&gone, vec![net1("192.0.2.32/24")]);
    writer.flush().await;
    assert_eq!(
        annotation(&pods, "web").await,
        serde_json::from_str::<Value>(PRIMARY).unwrap(),
        "the recreated pod got its predecessor's entry"
    );
    assert_eq!(server.faults().request_count("PATCH", "pods"), 0);
    assert!(pods.get_opt("gone").await.unwrap().is_none());
}
