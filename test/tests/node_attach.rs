//! The claim lifecycle on a node in namespaces, through the real `netclaim` binary: the
//! kubelet stand-in prepares over the DRA socket, the NRI runtime stand-in runs and stops
//! pod sandboxes over the NRI socket, the API server stand-in holds claims and slices.
//!
//! Crashes are real SIGKILLs, or `std::process::abort()` at a named crash point
//! (`NETCLAIM_CRASH_AT`, see `driver/src/hooks.rs`), which is the same to the kernel.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kubeletplugin::ClaimRef;
use netclaim::network_status::NETWORK_STATUS_ANNOTATION;
use netclaim_test::node::checks::{
    config, has_addr, host_view, network_status_interfaces, nic, pod_interfaces, pod_link,
};
use netclaim_test::node::{NicClaim, NodeOptions, PodRun, TestNode};
use serde_json::json;

fn uid(n: u32) -> String {
    format!(
        "00000000-0000-4000-8000-{:012x}",
        u64::from(n) + u64::from(std::process::id()) * 1000
    )
}

async fn start(options: NodeOptions) -> TestNode {
    TestNode::start(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn claimed_nic_is_configured_in_the_pod_and_given_back_exactly() {
    let mut node = start(NodeOptions::default()).await;
    node.ip(&["addr", "add", "203.0.113.7/24", "dev", "eth1"])
        .unwrap();
    node.ip(&["link", "set", "eth1", "mtu", "1400", "up"])
        .unwrap();
    let before = host_view(&node.node_link("eth1").unwrap());

    let pod_uid = uid(1);
    let cfg = config(json!({
        "name": "net1",
        "addresses": ["192.0.2.10/24", "2001:db8::10/64"],
        "mtu": 1500,
        "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.1"},
                   {"destination": "2001:db8:100::/48", "gateway": "2001:db8::1"}]
    }));
    let claim = node
        .allocate(&[nic("nic-a", "eth1", Some(cfg))], "web", &pod_uid)
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    assert_eq!(prepared[&claim.uid].devices.len(), 1);

    let pod = node.run_pod("web", &pod_uid).await.unwrap().unwrap();
    let link = pod_link(&node, &pod, "net1");
    assert_eq!(link["mtu"], 1500);
    assert!(has_addr(&link, "192.0.2.10/24"), "{link}");
    assert!(has_addr(&link, "2001:db8::10/64"), "{link}");
    let routes = node
        .in_pod(&pod, "ip", &["route", "show", "198.51.100.0/24"])
        .unwrap();
    assert!(routes.contains("via 192.0.2.1 dev net1"), "{routes}");
    let routes6 = node
        .in_pod(&pod, "ip", &["-6", "route", "show", "2001:db8:100::/48"])
        .unwrap();
    assert!(routes6.contains("via 2001:db8::1 dev net1"), "{routes6}");
    // The NIC really carries traffic: the lan side answers on 192.0.2.1.
    node.in_pod(&pod, "ping", &["-c", "1", "-W", "2", "192.0.2.1"])
        .unwrap();
    assert!(
        !node.ip(&["link", "show"]).unwrap().contains("eth1"),
        "eth1 still on the node"
    );

    // The claim's status carries networkData and Ready (written in the background).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let claim = node.claim("nic-a").await.unwrap();
        let devices = claim.status.and_then(|s| s.devices).unwrap_or_default();
        if let Some(device) = devices.into_iter().next() {
            break device;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no status.devices written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let data = status.network_data.unwrap();
    assert_eq!(data.interface_name.as_deref(), Some("net1"));
    assert!(data.ips.unwrap().contains(&"192.0.2.10/24".to_string()));
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");

    node.delete_pod(pod).await.unwrap();
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nics_in_one_pod_a_veth_and_a_macvlan() {
    let mut node = start(NodeOptions::default()).await;
    node.ip(&[
        "link", "add", "mv1", "link", "eth2", "type", "macvlan", "mode", "bridge",
    ])
    .unwrap();
    node.ip(&["link", "set", "eth2", "up"]).unwrap();
    let before_veth = host_view(&node.node_link("eth1").unwrap());
    let before_mv = host_view(&node.node_link("mv1").unwrap());
    let pod_uid = uid(2);
    let a = node
        .allocate(
            &[nic(
                "two-a",
                "eth1",
                Some(config(
                    json!({"name": "data0", "addresses": ["192.0.2.20/24"]}),
                )),
            )],
            "two",
            &pod_uid,
        )
        .await
        .unwrap();
    let b = node
        .allocate(
            &[nic(
                "two-b",
                "mv1",
                Some(config(
                    json!({"name": "data1", "addresses": ["2001:db8:2::20/64"]}),
                )),
            )],
            "two",
            &pod_uid,
        )
        .await
        .unwrap();
    let prepared = node.prepare(&[a.clone(), b.clone()]).await.unwrap();
    assert!(
        prepared.values().all(|o| o.error.is_empty()),
        "{prepared:?}"
    );
    let pod = node.run_pod("two", &pod_uid).await.unwrap().unwrap();
    assert!(has_addr(&pod_link(&node, &pod, "data0"), "192.0.2.20/24"));
    assert!(has_addr(
        &pod_link(&node, &pod, "data1"),
        "2001:db8:2::20/64"
    ));
    node.delete_pod(pod).await.unwrap();
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before_veth);
    assert_eq!(host_view(&node.node_link("mv1").unwrap()), before_mv);
    let unprepared = node.unprepare(&[a, b]).await.unwrap();
    assert_eq!(unprepared.len(), 2, "{unprepared:?}");
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configs_fail_per_claim_naming_the_field_and_change_nothing() {
    let node = start(NodeOptions::default()).await;
    // What the driver could have touched, without what the kernel changes on its own
    // (link-local addresses, carrier state).
    let view = |node: &TestNode| {
        ["eth1", "eth2"]
            .map(|nic| host_view(&node.node_link(nic).unwrap()))
            .to_vec()
    };
    let before = view(&node);
    let cases = [
        (
            "bad-unknown",
            json!({"name": "net1", "adresses": []}),
            "interface.adresses",
        ),
        ("bad-mtu", json!({"mtu": 70000}), "interface.mtu"),
        (
            "bad-addr",
            json!({"addresses": ["192.0.2.300/24"]}),
            "interface.addresses[0]",
        ),
        (
            "bad-gw",
            json!({"addresses": ["192.0.2.10/24"], "routes": [{"destination": "198.51.100.0/24", "gateway": "2001:db8::1"}]}),
            "interface.routes[0]",
        ),
        (
            "bad-name",
            json!({"name": "this-name-is-far-too-long"}),
            "interface.name",
        ),
    ];
    let mut refs = Vec::new();
    for (i, (name, interface, _)) in cases.iter().enumerate() {
        let pod_uid = uid(100 + u32::try_from(i).unwrap());
        refs.push(
            node.allocate(
                &[nic(name, "eth1", Some(config(interface.clone())))],
                name,
                &pod_uid,
            )
            .await
            .unwrap(),
        );
    }
    let outcome = node.prepare(&refs).await.unwrap();
    assert_eq!(outcome.len(), cases.len(), "{outcome:?}");
    for ((name, _, field), claim) in cases.iter().zip(&refs) {
        let error = &outcome[&claim.uid].error;
        assert!(
            error.starts_with(&format!("claim default/{name}")),
            "{name}: error {error:?} does not name the claim"
        );
        assert!(
            error.contains(field),
            "{name}: error {error:?} does not name {field}"
        );
        assert!(
            outcome[&claim.uid].devices.is_empty(),
            "{name}: a failed claim got devices"
        );
    }
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
    assert_eq!(view(&node), before, "the node changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attach_rolls_back_and_fails_the_sandbox_with_the_drivers_message() {
    let mut node = start(NodeOptions::default()).await;
    let before = host_view(&node.node_link("eth1").unwrap());
    let pod_uid = uid(3);
    // A gateway outside every on-link prefix: valid config, refused by the kernel in the pod.
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"],
        "routes": [{"destination": "198.51.100.0/24", "gateway": "203.0.113.1"}]}));
    let claim = node
        .allocate(&[nic("unreachable", "eth1", Some(cfg))], "rb", &pod_uid)
        .await
        .unwrap();
    assert_eq!(
        node.prepare(std::slice::from_ref(&claim)).await.unwrap()[&claim.uid].error,
        ""
    );
    let error = node.run_pod("rb", &pod_uid).await.unwrap().unwrap_err();
    assert!(error.contains("interface.routes[0]"), "{error}");
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}

/// Kills the driver at a point of the lifecycle, restarts it, finishes the lifecycle, and
/// checks nothing is stranded.
async fn crash_and_converge(crash: Crash) {
    let extra = match crash {
        Crash::AtPoint(point) => vec!["--crash-at".to_string(), point.to_string()],
        _ => Vec::new(),
    };
    let mut node = start(NodeOptions {
        extra_args: extra,
        ..NodeOptions::default()
    })
    .await;
    let before = host_view(&node.node_link("eth1").unwrap());
    let pod_uid = uid(4);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = node
        .allocate(&[nic("crashy", "eth1", Some(cfg))], "crash", &pod_uid)
        .await
        .unwrap();
    assert_eq!(
        node.prepare(std::slice::from_ref(&claim)).await.unwrap()[&claim.uid].error,
        ""
    );
    if crash == Crash::BetweenPrepareAndAttach {
        node.kill_driver().unwrap();
        node.start_driver().await.unwrap();
    }
    let run = node.run_pod("crash", &pod_uid).await.unwrap();
    let pod = run.expect("the sandbox runs: containerd drops a plugin that dies mid-call");
    if let Crash::AtPoint(_) = crash {
        // The driver died inside the hook: the runtime dropped it and the pod went on
        // without its NIC. The restarted driver's Synchronize lists the pod, and it must
        // finish the attach it had recorded.
        let drops = node.runtime_stand_in().unwrap().drops();
        assert!(
            drops
                .iter()
                .any(|d| d.plugin.name == "netclaim" && d.during.as_deref() == Some("StateChange")),
            "{drops:?}"
        );
        node.kill_driver().ok();
        node.set_driver_args(Vec::new());
        node.start_driver().await.unwrap();
        // The user is told: the claim says the NIC came late, and an Event says so.
        let condition = node
            .wait_for_ready_reason("crashy", "AttachedLate")
            .await
            .unwrap();
        assert_eq!(condition["status"], "True", "{condition}");
        assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.10/24"));
        let events = node.claim_events("crashy").await.unwrap();
        assert!(
            events
                .iter()
                .any(|(kind, reason, _)| kind == "Warning" && reason == "AttachedLate"),
            "{events:?}"
        );
    }
    if crash == Crash::BetweenAttachAndDetach {
        node.kill_driver().unwrap();
        node.start_driver().await.unwrap();
        assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.10/24"));
    }
    node.delete_pod(pod).await.unwrap();
    node.wait_until("eth1 is back on the node", || {
        node.node_link("eth1").is_ok()
    })
    .await
    .unwrap();
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
    assert_eq!(
        node.prepared_claims().unwrap(),
        json!({}),
        "stale checkpoint entry"
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    BetweenPrepareAndAttach,
    AtPoint(&'static str),
    BetweenAttachAndDetach,
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_between_prepare_and_attach_converges() {
    crash_and_converge(Crash::BetweenPrepareAndAttach).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_attach_before_the_move_converges() {
    crash_and_converge(Crash::AtPoint("attach-recorded")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_attach_after_the_move_converges() {
    crash_and_converge(Crash::AtPoint("attach-moved")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_between_attach_and_detach_converges() {
    crash_and_converge(Crash::BetweenAttachAndDetach).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_reconnects_after_a_runtime_restart_and_keeps_working() {
    let mut node = start(NodeOptions::default()).await;
    node.restart_runtime().await.unwrap();
    node.wait_until("the plugin reconnected", || {
        node.driver_log().matches("NRI plugin registered").count() >= 2
    })
    .await
    .unwrap();
    let pod_uid = uid(5);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = node
        .allocate(&[nic("after-restart", "eth1", Some(cfg))], "rr", &pod_uid)
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    let pod = node.run_pod("rr", &pod_uid).await.unwrap().unwrap();
    assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.10/24"));
    node.delete_pod(pod).await.unwrap();
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_uplink_is_never_published() {
    let node = start(NodeOptions::default()).await;
    node.device_for("eth1").await.unwrap();
    let names: Vec<String> = node
        .slices()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|s| s.spec.devices.unwrap_or_default())
        .filter_map(|d| d.attributes?.get("ifName")?.string.clone())
        .collect();
    assert!(!names.contains(&"uplink0".to_string()), "{names:?}");
    assert!(names.contains(&"eth2".to_string()), "{names:?}");
}

/// What the pod's network-status annotation holds before netclaim writes: the primary
/// network's entry, which is not netclaim's and must survive every netclaim write.
const PRIMARY_NETWORK_STATUS: &str = r#"[{"name":"cbr0","interface":"eth0","ips":["198.51.100.5"],"mac":"02:00:00:00:00:aa","default":true}]"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_pods_network_status_annotation_lists_its_claimed_interfaces() {
    let mut node = start(NodeOptions::default()).await;
    let pod_uid = node
        .create_pod_object(
            "annotated",
            json!({ NETWORK_STATUS_ANNOTATION: PRIMARY_NETWORK_STATUS }),
        )
        .await
        .unwrap();
    let first = config(json!({"name": "net1", "addresses": ["192.0.2.20/24", "2001:db8::20/64"]}));
    let second = config(json!({"name": "net2", "addresses": ["203.0.113.20/24"]}));
    let a = node
        .allocate(
            &[nic("status-a", "eth1", Some(first))],
            "annotated",
            &pod_uid,
        )
        .await
        .unwrap();
    let b = node
        .allocate(
            &[nic("status-b", "eth2", Some(second))],
            "annotated",
            &pod_uid,
        )
        .await
        .unwrap();
    let prepared = node.prepare(&[a.clone(), b.clone()]).await.unwrap();
    assert!(
        prepared.values().all(|o| o.error.is_empty()),
        "{prepared:?}"
    );

    let pod = node.run_pod("annotated", &pod_uid).await.unwrap().unwrap();
    let ours = |name: &str| name.starts_with("default/status-");
    let written = node
        .wait_for_pod_annotation(
            "annotated",
            NETWORK_STATUS_ANNOTATION,
            "netclaim's entries are in the annotation",
            |value| value.is_some_and(|v| network_status_interfaces(v, ours).len() == 2),
        )
        .await
        .unwrap()
        .unwrap();
    // Exactly the pod's interfaces, with the addresses and MACs the pod's netns shows.
    assert_eq!(
        network_status_interfaces(&written, ours),
        pod_interfaces(&node, &pod),
        "{written}"
    );
    let entries: Vec<serde_json::Value> = serde_json::from_str(&written).unwrap();
    let names: Vec<&str> = entries.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        names,
        ["cbr0", "default/status-a", "default/status-b"],
        "{written}"
    );
    assert_eq!(
        entries[0]["default"], true,
        "the primary entry is kept as it was"
    );
    assert!(
        entries[1..].iter().all(|e| e["default"] == false),
        "{written}"
    );

    node.delete_pod(pod).await.unwrap();
    let after = node
        .wait_for_pod_annotation(
            "annotated",
            NETWORK_STATUS_ANNOTATION,
            "netclaim's entries are gone after the pod stopped",
            |value| value.is_some_and(|v| network_status_interfaces(v, ours).is_empty()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&after).unwrap(),
        serde_json::from_str::<serde_json::Value>(PRIMARY_NETWORK_STATUS).unwrap()
    );
    let unprepared = node.unprepare(&[a, b]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}

/// The device entries of claim `uid` as the driver's checkpoint holds them on disk.
fn recorded_nics(node: &TestNode, uid: &str) -> Vec<serde_json::Value> {
    node.prepared_claims().unwrap()[uid]["nics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether the recorded device has an attachment (in any phase).
fn is_attached(nic: &serde_json::Value) -> bool {
    nic.get("attachment").is_some_and(|a| !a.is_null())
}

/// Issue 11: the second NIC of a pod is refused by the kernel after the first one was
/// attached; the first is given back (newest first), both end on the node exactly as
/// before, the sandbox fails naming the failing device and field, and the claim's status
/// and an Event say why.
#[tokio::test(flavor = "multi_thread")]
async fn a_later_nic_failing_rolls_back_the_earlier_one_and_the_user_is_told() {
    let mut node = start(NodeOptions::default()).await;
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    node.ip(&["addr", "add", "203.0.113.9/24", "dev", "eth2"])
        .unwrap();
    let before = ["eth1", "eth2"].map(|nic| host_view(&node.node_link(nic).unwrap()));
    let pod_uid = uid(20);
    // One claim with two requests, so the order of the two NICs is the allocation's.
    let first = NicClaim {
        request: "first".into(),
        ..nic(
            "two-nics",
            "eth1",
            Some(config(
                json!({"name": "net1", "addresses": ["192.0.2.10/24"]}),
            )),
        )
    };
    // Valid, but the kernel refuses it in the pod: the gateway is on no connected prefix.
    let second = NicClaim {
        request: "second".into(),
        ..nic(
            "two-nics",
            "eth2",
            Some(config(
                json!({"name": "net2", "addresses": ["198.51.100.10/24"],
                "routes": [{"destination": "203.0.113.128/25", "gateway": "203.0.113.1"}]}),
            )),
        )
    };
    let claim = node
        .allocate(&[first, second], "twonics", &pod_uid)
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    let eth2_device = node.device_for("eth2").await.unwrap();

    // The RUN hook alone: no STOP follows that could give the first NIC back instead.
    let error = node
        .run_hook_only("twonics", &pod_uid)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        error.contains("claim default/two-nics") && error.contains(&eth2_device),
        "the failing device is not named: {error}"
    );
    assert!(error.contains("interface.routes[0]"), "{error}");
    // Both NICs back exactly: the first one was rolled back.
    let after = ["eth1", "eth2"].map(|nic| host_view(&node.node_link(nic).unwrap()));
    assert_eq!(after, before, "the node's NICs changed");
    let nics = recorded_nics(&node, &claim.uid);
    assert!(!nics.iter().any(is_attached), "{nics:?}");
    assert_eq!(nics[1]["failure"]["reason"], "AttachFailed", "{nics:?}");
    assert!(
        nics[0]
            .get("failure")
            .is_none_or(serde_json::Value::is_null),
        "the rolled-back NIC did not fail: {nics:?}"
    );
    // The user is told on the claim too.
    let condition = node
        .wait_for_ready_reason("two-nics", "AttachFailed")
        .await
        .unwrap();
    assert_eq!(condition["status"], "False", "{condition}");
    assert!(
        condition["message"]
            .as_str()
            .is_some_and(|m| m.contains("interface.routes[0]")),
        "{condition}"
    );
    let (kind, note) = node
        .wait_for_claim_event("two-nics", "AttachFailed")
        .await
        .unwrap();
    assert_eq!(kind, "Warning");
    assert!(note.contains(&eth2_device), "{note}");
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

/// Allocates and prepares one NIC claim for a pod, asserting prepare succeeded.
async fn prepared(node: &TestNode, claim: NicClaim, pod: &str, pod_uid: &str) -> ClaimRef {
    let claim = node.allocate(&[claim], pod, pod_uid).await.unwrap();
    let outcome = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(
        outcome[&claim.uid].error, "",
        "prepare of {} failed",
        claim.name
    );
    claim
}

/// Issue 11: the driver dies right after recording `Detaching` inside a pod's STOP, while
/// the pod is still known to the runtime. The restarted driver's Synchronize must finish
/// the give-back (the record says the NIC may be anywhere between pod and host), before
/// any REMOVE comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_left_detaching_by_a_crash_is_given_back_at_the_next_synchronize() {
    let mut node = start(NodeOptions {
        extra_args: vec!["--crash-at".into(), "detach-recorded".into()],
        ..NodeOptions::default()
    })
    .await;
    let before = host_view(&node.node_link("eth1").unwrap());
    let pod_uid = uid(21);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = prepared(&node, nic("detaching", "eth1", Some(cfg)), "det", &pod_uid).await;
    let pod = node.run_pod("det", &pod_uid).await.unwrap().unwrap();
    assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.10/24"));

    // STOP alone: the driver aborts inside it, the runtime drops it and goes on.
    let stop =
        netclaim_test::runtime::pod_sandbox(&pod.sandbox_id, &pod.name, "default", &pod.uid, None);
    let report = node
        .runtime_stand_in()
        .unwrap()
        .stop_pod_sandbox(stop)
        .await
        .unwrap();
    assert_eq!(
        report.dropped().len(),
        1,
        "the driver did not die in STOP: {report:?}"
    );
    let nics = recorded_nics(&node, &claim.uid);
    assert_eq!(nics[0]["attachment"]["phase"], "detaching", "{nics:?}");
    assert!(
        node.node_link("eth1").is_err(),
        "eth1 came back before the restart"
    );

    node.kill_driver().ok();
    node.set_driver_args(Vec::new());
    node.start_driver().await.unwrap();
    node.wait_until("eth1 is back on the node", || {
        node.node_link("eth1").is_ok()
    })
    .await
    .unwrap();
    node.wait_until("the record has no attachment", || {
        !recorded_nics(&node, &claim.uid).iter().any(is_attached)
    })
    .await
    .unwrap();
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    assert!(
        node.in_pod(&pod, "ip", &["link", "show", "net1"]).is_err(),
        "net1 is still in the pod"
    );
    assert_eq!(node.remove_pod(pod).await.unwrap(), Ok(()));
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

/// Issue 11: what a RUN finds gone. A prepared NIC that left the node fails the sandbox
/// naming the claim and saying so; a pod netns that is gone fails the sandbox, leaves the
/// NIC untouched on the node, and the claim's status says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_device_or_a_pod_netns_gone_at_run_fails_the_sandbox_and_changes_nothing() {
    let mut node = start(NodeOptions::default()).await;
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let before = host_view(&node.node_link("eth1").unwrap());

    // The pod's network namespace is gone by the time RUN comes.
    let pod_uid = uid(23);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = prepared(
        &node,
        nic("nonetns", "eth1", Some(cfg)),
        "nonetns",
        &pod_uid,
    )
    .await;
    let error = node
        .run_pod_in_removed_netns("nonetns", &pod_uid)
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.contains("claim default/nonetns"), "{error}");
    assert!(
        error.contains("opening the pod's network namespace"),
        "{error}"
    );
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    let nics = recorded_nics(&node, &claim.uid);
    assert!(!is_attached(&nics[0]), "{nics:?}");
    let condition = node
        .wait_for_ready_reason("nonetns", "AttachFailed")
        .await
        .unwrap();
    assert!(
        condition["message"]
            .as_str()
            .is_some_and(|m| m.contains("network namespace")),
        "{condition}"
    );
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");

    // The prepared NIC is deleted from the node before its pod runs.
    let pod_uid = uid(24);
    let claim = prepared(&node, nic("nodevice", "eth2", None), "nodevice", &pod_uid).await;
    node.ip(&["link", "del", "eth2"]).unwrap();
    let error = node
        .run_pod("nodevice", &pod_uid)
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.contains("claim default/nodevice"), "{error}");
    assert!(
        error.contains("the device is no longer on the host"),
        "{error}"
    );
    let condition = node
        .wait_for_ready_reason("nodevice", "AttachFailed")
        .await
        .unwrap();
    assert!(
        condition["message"]
            .as_str()
            .is_some_and(|m| m.contains("the device is no longer on the host")),
        "{condition}"
    );
    let nics = recorded_nics(&node, &claim.uid);
    assert!(!is_attached(&nics[0]), "{nics:?}");
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

/// Issue 11: the give-back fails at STOP and again at REMOVE (injected twice): each hook
/// fails with the reason, the record says `DetachFailed` (a Warning Event says so), the
/// driver keeps the pod's netns so the NIC survives the runtime removing it, and the
/// kubelet's unprepare retries and brings the NIC back exactly.
#[tokio::test(flavor = "multi_thread")]
async fn a_give_back_failing_at_stop_and_remove_is_retried_by_unprepare() {
    let fault = ["--inject-fault", "give-back-fails-once"];
    let mut node = start(NodeOptions {
        extra_args: [fault, fault]
            .concat()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        ..NodeOptions::default()
    })
    .await;
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let before = host_view(&node.node_link("eth1").unwrap());
    let pod_uid = uid(25);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = prepared(&node, nic("stuck", "eth1", Some(cfg)), "stuck", &pod_uid).await;
    let mut pod = node.run_pod("stuck", &pod_uid).await.unwrap().unwrap();

    let stop = node.stop_pod(&mut pod).await.unwrap().unwrap_err();
    assert!(stop.contains("claim default/stuck"), "{stop}");
    assert!(stop.contains("injected fault"), "{stop}");
    let nics = recorded_nics(&node, &claim.uid);
    assert_eq!(nics[0]["attachment"]["phase"], "detachFailed", "{nics:?}");
    let (kind, note) = node
        .wait_for_claim_event("stuck", "DetachFailed")
        .await
        .unwrap();
    assert_eq!(kind, "Warning");
    assert!(note.contains("injected fault"), "{note}");

    // REMOVE retries (and fails again); the pod's netns is gone from the runtime now.
    let remove = node.remove_pod(pod).await.unwrap().unwrap_err();
    assert!(remove.contains("injected fault"), "{remove}");
    assert!(node.node_link("eth1").is_err(), "eth1 came back after all");
    // The NIC lives on in the namespace the driver holds: its wire is still there.
    assert!(
        node.lan().has_link("peer1"),
        "eth1 died with the pod's netns"
    );

    let unprepared = node.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

/// Issue 11: two sandboxes of one pod (the kubelet's attempt 0 and 1) race for the same
/// moved NIC: one gets it, the other fails naming the sandbox that holds it, and the
/// holder keeps a working NIC.
#[tokio::test(flavor = "multi_thread")]
async fn two_sandboxes_racing_for_one_nic_leave_it_with_one_of_them() {
    let mut node = start(NodeOptions::default()).await;
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let before = host_view(&node.node_link("eth1").unwrap());
    let pod_uid = uid(26);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = prepared(&node, nic("raced", "eth1", Some(cfg)), "raced", &pod_uid).await;
    let runs = [0, 1].map(|attempt| PodRun {
        attempt,
        ..PodRun::new("raced", &pod_uid)
    });
    let outcomes = node.run_pods_at_once(&runs).await.unwrap();
    let (mut won, lost): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    assert_eq!((won.len(), lost.len()), (1, 1), "{won:?} {lost:?}");
    let winner = won.pop().unwrap().unwrap();
    let error = lost.into_iter().next().unwrap().unwrap_err();
    assert!(error.contains("claim default/raced"), "{error}");
    assert!(
        error.contains(&format!(
            "attached to another pod sandbox ({}, pod default/raced)",
            winner.sandbox_id
        )),
        "{error}"
    );
    let nics = recorded_nics(&node, &claim.uid);
    assert_eq!(
        nics[0]["attachment"]["sandboxId"],
        winner.sandbox_id.as_str()
    );
    assert_eq!(nics[0]["attachment"]["phase"], "attached");
    assert!(has_addr(&pod_link(&node, &winner, "net1"), "192.0.2.10/24"));
    node.in_pod(&winner, "ping", &["-c", "1", "-W", "2", "192.0.2.1"])
        .unwrap();
    node.delete_pod(winner).await.unwrap();
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}

/// Issue 11: a claim whose NIC is in a pod is deallocated and allocated again (same UID,
/// another device) while the driver still has it attached, and the kubelet prepares it:
/// prepare refuses with a per-claim error saying why, and nothing moves: the pod keeps
/// its NIC, the new device stays on the node.
#[tokio::test(flavor = "multi_thread")]
async fn reallocating_a_claim_whose_nic_is_in_a_pod_is_refused_and_nothing_moves() {
    use k8s_openapi::api::resource::v1::ResourceClaim;
    use kube::api::{Api, PostParams};

    let mut node = start(NodeOptions::default()).await;
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let before_eth1 = host_view(&node.node_link("eth1").unwrap());
    let before_eth2 = host_view(&node.node_link("eth2").unwrap());
    let pod_uid = uid(27);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = prepared(
        &node,
        nic("realloc", "eth1", Some(cfg)),
        "realloc",
        &pod_uid,
    )
    .await;
    let pod = node.run_pod("realloc", &pod_uid).await.unwrap().unwrap();
    let recorded_before = node.prepared_claims().unwrap();

    // As the scheduler would after a deallocation: the same claim, now on eth2.
    let claims: Api<ResourceClaim> = Api::namespaced(node.api.client(), "default");
    let mut current = claims.get("realloc").await.unwrap();
    let mut status = serde_json::to_value(current.status.take().unwrap()).unwrap();
    current.status = Some(serde_json::from_value(json!({})).unwrap());
    let current = claims
        .replace_status("realloc", &PostParams::default(), &current)
        .await
        .unwrap();
    let eth2 = node.device_for("eth2").await.unwrap();
    status["allocation"]["devices"]["results"][0]["device"] = json!(eth2);
    status.as_object_mut().unwrap().remove("devices");
    let mut reallocated = current;
    reallocated.status = Some(serde_json::from_value(status).unwrap());
    claims
        .replace_status("realloc", &PostParams::default(), &reallocated)
        .await
        .unwrap();

    let outcome = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    let error = &outcome[&claim.uid].error;
    assert!(error.starts_with("claim default/realloc: "), "{error}");
    assert!(
        error.contains("still attached to a pod; unprepare it first"),
        "{error}"
    );
    assert!(outcome[&claim.uid].devices.is_empty(), "{outcome:?}");
    assert_eq!(node.prepared_claims().unwrap(), recorded_before);
    assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.10/24"));
    assert_eq!(host_view(&node.node_link("eth2").unwrap()), before_eth2);

    node.delete_pod(pod).await.unwrap();
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before_eth1);
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}
