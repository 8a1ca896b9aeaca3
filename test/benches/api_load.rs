//! What netclaim costs the API server, per node and per hour.
//!
//! Two parts, one command (`cargo bench -p netclaim-test --bench api_load [-- NODES SECONDS]`,
//! default 500 nodes, 30 s per phase):
//!
//! 1. **One node agent** (the real `netclaim run` on a node in namespaces with 16 NICs,
//!    against the API server stand-in): requests by verb and bytes in steady state, then
//!    while one NIC's link flaps (its veth peer down and up) every 100 ms. A flap must not
//!    become a slice write each time: the target is at most one write per 10 s.
//! 2. **Many publishers**: `NODES` instances of the `kubeletplugin` ResourceSlice publisher
//!    (the code every node agent runs), each with its own client and 16 devices, against one
//!    stand-in in this process: start-up, then steady state. The steady-state figure times
//!    5,000 is a cluster's standing load.
//!
//! The stand-in counts requests as the API server's request info names them (`list`,
//! `watch`, `update`, ...) and response bytes as sent, watch events included
//! (`test/src/apiserver/traffic.rs`). Reference in the same run: the start-up pass of each
//! part (what publishing once costs), against which steady state and flapping are compared.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::resource::v1::Device;
use kubeletplugin::{DriverResources, Pool, PublisherConfig, ResourceSlicePublisher};
use netclaim_test::apiserver::{ApiServer, ApiServerOptions, Traffic};
use netclaim_test::node::{NodeOptions, TestNode};

const NICS: usize = 16;
const FLAP_EVERY: Duration = Duration::from_millis(100);

fn per_hour(count: u64, over: Duration) -> f64 {
    count as f64 * 3600.0 / over.as_secs_f64()
}

/// One line per (verb, resource) seen, scaled to per node per hour.
fn report(title: &str, traffic: &Traffic, over: Duration, nodes: u64) {
    println!("\n{title} ({over:.1?}, {nodes} node(s)); per node per hour:");
    let by_verb: BTreeMap<(String, String), u64> = traffic.by_verb();
    if by_verb.is_empty() {
        println!("  no requests");
    }
    for ((verb, resource), count) in &by_verb {
        println!(
            "  {verb:<8} {resource:<28} {:>10.1}   ({count} in the phase)",
            per_hour(*count, over) / nodes as f64
        );
    }
    println!(
        "  bytes in {:>10.0}   bytes out {:>10.0}",
        per_hour(traffic.bytes_in(), over) / nodes as f64,
        per_hour(traffic.bytes_out(), over) / nodes as f64
    );
}

fn slice_writes(traffic: &Traffic) -> u64 {
    ["create", "update", "patch", "delete", "deletecollection"]
        .iter()
        .map(|verb| traffic.requests(verb, "resourceslices"))
        .sum()
}

async fn one_node_agent(seconds: u64) {
    println!("== part 1: one node agent (the netclaim binary), {NICS} NICs");
    // Kubernetes 1.37: device taints are GA, so a lost link is a taint written to the slice.
    let mut node = TestNode::start(NodeOptions {
        nics: NICS,
        api: ApiServerOptions::kubernetes(37),
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    // Poll the stand-in until every NIC is published (a bench may poll; the start-up pass
    // is not what is measured).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let published: usize = node
            .slices()
            .await
            .unwrap()
            .iter()
            .map(|s| s.spec.devices.as_ref().map_or(0, Vec::len))
            .sum();
        if published >= NICS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {published} of {NICS} NICs published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An administratively down NIC is an unused one, not an unhealthy one: bring eth2 up,
    // so its carrier (its veth peer's state) is what decides its health.
    node.ip(&["link", "set", "eth2", "up"]).unwrap();
    // Let that change settle (link up, then the 10 s taint hold) before measuring.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let traffic = node.api.traffic();
    let phase = Duration::from_secs(seconds);

    traffic.reset();
    tokio::time::sleep(phase).await; // the workload: nothing happens for a while
    report("steady state", &traffic, phase, 1);
    let steady_writes = slice_writes(&traffic);
    let steady_lists = traffic.requests("list", "resourceslices");

    traffic.reset();
    let started = Instant::now();
    let mut up = true;
    let mut flaps = 0u64;
    let mut tick = tokio::time::interval(FLAP_EVERY);
    while started.elapsed() < phase {
        tick.tick().await;
        up = !up;
        node.lan()
            .ip(&["link", "set", "peer2", if up { "up" } else { "down" }])
            .unwrap();
        flaps += 1;
    }
    node.lan().ip(&["link", "set", "peer2", "up"]).unwrap();
    // The taint is held at least 10 s: let the untaint after the last flap land too.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let flapped = started.elapsed();
    report(
        &format!("eth2 flapping every {FLAP_EVERY:?} ({flaps} changes)"),
        &traffic,
        flapped,
        1,
    );
    let writes = slice_writes(&traffic);
    let allowed = flapped.as_secs_f64() / 10.0;
    println!(
        "\nslice writes: steady {steady_writes}, flapping {writes} (target: at most one per 10 s = {allowed:.1}) -> {}",
        if writes as f64 <= allowed.ceil() {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "LISTs of resourceslices: steady {steady_lists}, flapping {} (target: none per pass)",
        traffic.requests("list", "resourceslices")
    );
    node.stop_driver().unwrap();
}

fn devices(node: usize) -> Vec<Device> {
    (0..NICS)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "name": format!("nic-{i}"),
                "attributes": {
                    "netclaim.dev/ifName": {"string": format!("eth{i}")},
                    "netclaim.dev/mac": {"string": format!("02:00:00:{:02x}:{:02x}:{i:02x}", node / 256, node % 256)},
                    "netclaim.dev/mtu": {"int": 1500},
                    "netclaim.dev/type": {"string": "device"},
                    "resource.kubernetes.io/pcieRoot": {"string": "pci0000:00"},
                    "resource.kubernetes.io/pciBusID": {"string": format!("0000:{:02x}:00.0", i + 1)},
                }
            }))
            .unwrap()
        })
        .collect()
}

async fn many_publishers(nodes: usize, seconds: u64) {
    println!("\n== part 2: {nodes} ResourceSlice publishers, {NICS} devices each");
    let api = ApiServer::start_with(ApiServerOptions::kubernetes(37))
        .await
        .unwrap();
    let traffic = api.traffic();
    let node_api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(api.client());
    for n in 0..nodes {
        let node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{n}")}
        }))
        .unwrap();
        node_api
            .create(&kube::api::PostParams::default(), &node)
            .await
            .unwrap();
    }
    traffic.reset();
    let started = Instant::now();
    let mut publishers = Vec::new();
    for n in 0..nodes {
        let name = format!("node-{n}");
        let publisher = ResourceSlicePublisher::start(
            api.client(),
            PublisherConfig {
                driver_name: "netclaim.dev".into(),
                node_name: name.clone(),
                node_uid: None,
            },
        );
        publisher.update(DriverResources {
            pools: BTreeMap::from([(name, Pool::new(devices(n)))]),
        });
        publishers.push(publisher);
    }
    for publisher in &publishers {
        let mut status = publisher.status();
        status.wait_for(|s| s.synced_generation >= 1).await.unwrap();
    }
    report(
        "start-up (every node publishes once)",
        &traffic,
        started.elapsed(),
        nodes as u64,
    );
    let startup_writes = slice_writes(&traffic);

    traffic.reset();
    let phase = Duration::from_secs(seconds);
    tokio::time::sleep(phase).await; // the workload: a quiet cluster
    report("steady state", &traffic, phase, nodes as u64);
    let requests = traffic.requests("*", "*");
    println!(
        "\nstart-up: {startup_writes} slice writes for {nodes} nodes; steady state: {requests} requests in {phase:?} \
         ({:.1} per node per hour; x5,000 nodes = {:.1} requests/s cluster-wide), {} slice writes",
        per_hour(requests, phase) / nodes as f64,
        requests as f64 / phase.as_secs_f64() / nodes as f64 * 5000.0,
        slice_writes(&traffic)
    );
    for publisher in publishers {
        publisher.shutdown(false).await;
    }
    api.shutdown().await;
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let nodes = args.first().and_then(|a| a.parse().ok()).unwrap_or(500);
    let seconds = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        one_node_agent(seconds).await;
        many_publishers(nodes, seconds).await;
    });
}
