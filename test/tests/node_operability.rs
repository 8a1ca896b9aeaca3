//! What an admin operates: the metrics endpoint, the health endpoints the DaemonSet's probes
//! use, and a rolling update with `maxSurge: 1` (two instances on one node, the newer one
//! taking over). All through the real `netclaim` binary on a node in namespaces, with the
//! kubelet, NRI runtime and API server stand-ins.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use netclaim_test::node::checks::{config, host_view, nic, pod_link};
use netclaim_test::node::{NodeOptions, TestNode};
use serde_json::json;

fn uid(n: u32) -> String {
    format!(
        "00000000-0000-4000-8000-{:012x}",
        u64::from(n) + u64::from(std::process::id()) * 1000
    )
}

/// The samples of a Prometheus text exposition, by series (name and labels as printed).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Scrapes until `series` has `value` (the background writers and the publisher update
/// their series after the calls that caused them returned), or fails showing the scrape.
async fn wait_for_sample(node: &TestNode, series: &str, value: f64) -> BTreeMap<String, f64> {
    let reached = node
        .wait_until(&format!("{series} == {value}"), || {
            node.http_get("/metrics")
                .is_ok_and(|(code, text)| code == 200 && samples(&text).get(series) == Some(&value))
        })
        .await;
    let (_, text) = node.http_get("/metrics").unwrap();
    assert!(reached.is_ok(), "{series} never reached {value}:\n{text}");
    samples(&text)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_prepare_attach_detach_cycle_and_probes_answer() {
    let mut node = TestNode::start(NodeOptions::default()).await.unwrap();
    assert_eq!(node.http_get("/healthz").unwrap(), (200, "ok\n".to_owned()));
    node.wait_until("/readyz says ok", || {
        node.http_get("/readyz").is_ok_and(|(code, _)| code == 200)
    })
    .await
    .unwrap();
    assert_eq!(node.http_get("/readyz").unwrap(), (200, "ok\n".to_owned()));

    let pod_uid = uid(1);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = node
        .allocate(&[nic("nic-a", "eth1", Some(cfg))], "web", &pod_uid)
        .await
        .unwrap();
    // One claim refused: its device is not on this node.
    let stray = node
        .allocate(&[nic("nic-b", "eth1", None)], "other", &uid(2))
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "");
    let refused = node.prepare(std::slice::from_ref(&stray)).await.unwrap();
    assert!(
        refused[&stray.uid].error.contains("already prepared"),
        "{:?}",
        refused[&stray.uid]
    );

    let pod = node.run_pod("web", &pod_uid).await.unwrap().unwrap();
    assert_eq!(pod_link(&node, &pod, "net1")["operstate"], "UP");
    node.delete_pod(pod).await.unwrap();
    let unprepared = node.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(unprepared[&claim.uid], "");

    let m = wait_for_sample(
        &node,
        "netclaim_status_writer_pending{writer=\"claim-status\"}",
        0.0,
    )
    .await;
    let expect = [
        ("netclaim_nri_connected", 1.0),
        ("netclaim_nri_registrations_total", 1.0),
        (
            "netclaim_dra_claims_total{method=\"prepare\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "netclaim_dra_claims_total{method=\"prepare\",outcome=\"error\"}",
            1.0,
        ),
        (
            "netclaim_dra_claims_total{method=\"unprepare\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "netclaim_dra_call_duration_seconds_count{method=\"prepare\"}",
            2.0,
        ),
        (
            "netclaim_nri_hook_duration_seconds_count{event=\"RunPodSandbox\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "netclaim_nri_hook_duration_seconds_count{event=\"StopPodSandbox\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "netclaim_nri_hook_duration_seconds_count{event=\"RemovePodSandbox\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "netclaim_attaches_total{backend=\"move\",result=\"ok\"}",
            1.0,
        ),
        (
            "netclaim_give_backs_total{backend=\"move\",result=\"ok\"}",
            1.0,
        ),
        ("netclaim_late_attaches_total", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(m.get(series), Some(&value), "{series}: {m:#?}");
    }
    assert!(
        m.get("netclaim_published_devices")
            .is_some_and(|n| *n >= 1.0),
        "{m:#?}"
    );
    assert!(
        m.get("netclaim_slice_syncs_total")
            .is_some_and(|n| *n >= 1.0),
        "{m:#?}"
    );
    // A claimless pod costs nothing: it is not even an attach.
    let before =
        m["netclaim_nri_hook_duration_seconds_count{event=\"RunPodSandbox\",outcome=\"ok\"}"];
    let plain = node.run_pod("plain", &uid(3)).await.unwrap().unwrap();
    let m = wait_for_sample(
        &node,
        "netclaim_nri_hook_duration_seconds_count{event=\"RunPodSandbox\",outcome=\"ok\"}",
        before + 1.0,
    )
    .await;
    assert_eq!(
        m.get("netclaim_attaches_total{backend=\"move\",result=\"ok\"}"),
        Some(&1.0)
    );
    node.delete_pod(plain).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_update_hands_the_node_over_without_a_failed_call() {
    let mut node = TestNode::start(NodeOptions {
        extra_args: vec!["--pod-uid".into(), "old-pod".into()],
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    let before = host_view(&node.node_link("eth1").unwrap());

    // A pod with its NIC, attached by the old instance.
    let pod_uid = uid(10);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = node
        .allocate(&[nic("nic-a", "eth1", Some(cfg))], "web", &pod_uid)
        .await
        .unwrap();
    assert_eq!(
        node.prepare(std::slice::from_ref(&claim)).await.unwrap()[&claim.uid].error,
        ""
    );
    let pod = node.run_pod("web", &pod_uid).await.unwrap().unwrap();
    assert_eq!(pod_link(&node, &pod, "net1")["operstate"], "UP");

    // The new pod starts next to it; the kubelet stand-in switches to it once registered.
    let mut old = node
        .start_next_driver(vec!["--pod-uid".into(), "new-pod".into()])
        .await
        .unwrap()
        .unwrap();
    // The old one handed over and stays up, idle, until it is deleted.
    assert!(old.try_wait().unwrap().is_none(), "{}", node.driver_log());
    let log = node.driver_log();
    assert!(log.contains("stepping down"), "{log}");
    assert!(
        log.contains("took over from the previous netclaim"),
        "{log}"
    );
    let sockets: Vec<String> = std::fs::read_dir(node.plugins_dir().join("../plugins_registry"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sockets, ["netclaim.dev-new-pod-reg.sock"], "{sockets:?}");

    // The new instance holds the pod's NIC (from the checkpoint) and serves the kubelet:
    // a new claim on another NIC prepares, the old pod's NIC comes back at its STOP.
    assert_eq!(node.http_get("/healthz").unwrap().0, 200);
    let second = node
        .allocate(&[nic("nic-b", "eth2", None)], "api", &uid(11))
        .await
        .unwrap();
    assert_eq!(
        node.prepare(std::slice::from_ref(&second)).await.unwrap()[&second.uid].error,
        ""
    );
    node.delete_pod(pod).await.unwrap();
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    for c in [&claim, &second] {
        assert_eq!(
            node.unprepare(std::slice::from_ref(c)).await.unwrap()[&c.uid],
            ""
        );
    }

    // The DaemonSet then deletes the old pod: SIGTERM, a clean exit.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(old.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(old.wait().unwrap().success());
    // And the new one still serves.
    let ready = node
        .wait_until("/readyz says ok", || {
            node.http_get("/readyz").is_ok_and(|(code, _)| code == 200)
        })
        .await;
    assert!(ready.is_ok(), "/readyz: {:?}", node.http_get("/readyz"));
}
