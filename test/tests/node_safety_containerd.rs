//! Node safety (issue 10) on a real containerd with NRI, through the real `netclaim`
//! binary: prepare while the runtime's NRI socket is gone, pods run while the driver was
//! away (attached late, or told why not), a CNI plugin slower than containerd's
//! `plugin_request_timeout` next to a dozen other sandboxes, two sandboxes of one pod
//! racing for a CNI claim, a rollback that fails, a restart with NICs in pods, and the
//! driver killed in the middle of a RunPodSandbox (a real SIGKILL inside the CNI chain, and
//! aborts at the hook's crash points).
//!
//! Runs on the containerd `NETCLAIM_CONTAINERD_MAJOR` chooses (`1`: 1.7.24, the default;
//! `2`: 2.1.9); `hack/test.sh` runs this file on both (it finds it by its use of
//! `RuntimeKind::Containerd`). A missing containerd fails the tests, naming
//! `hack/install-deps.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::api::{Api, DeleteParams};
use kubeletplugin::ClaimRef;
use netclaim_test::node::checks::{cni_nic, config, has_addr, host_view, nic, pod_link};
use netclaim_test::node::{NicClaim, NodeOptions, PodRun, RuntimeKind, TestNode};
use serde_json::{Value, json};

fn uid(n: u32) -> String {
    format!(
        "00000000-0000-4000-b000-{:012x}",
        u64::from(n) + u64::from(std::process::id()) * 1000
    )
}

/// A node on the containerd `NETCLAIM_CONTAINERD_MAJOR` chooses, with `nics` NICs and the
/// driver started with `extra_args`.
async fn start(nics: usize, extra_args: &[&str]) -> TestNode {
    TestNode::start(NodeOptions {
        runtime: RuntimeKind::Containerd,
        nics,
        extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        ..NodeOptions::default()
    })
    .await
    .unwrap_or_else(|error| panic!("{error:#}"))
}

async fn prepared(node: &TestNode, claims: &[NicClaim], pod: &str, pod_uid: &str) -> ClaimRef {
    let claim = node.allocate(claims, pod, pod_uid).await.unwrap();
    let outcome = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(
        outcome[&claim.uid].error, "",
        "prepare of {} failed",
        claim.name
    );
    claim
}

async fn unprepared_cleanly(node: &TestNode, claims: &[ClaimRef]) {
    let outcome = node.unprepare(claims).await.unwrap();
    assert!(outcome.values().all(String::is_empty), "{outcome:?}");
}

fn recorded_nics(node: &TestNode, uid: &str) -> Vec<Value> {
    node.prepared_claims().unwrap()[uid]["nics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_attachment(nic: &Value) -> bool {
    nic.get("attachment").is_some_and(|a| !a.is_null())
}

fn write_plugin(dir: &Path, name: &str, script: &str) {
    netclaim_test::netns::write_executable(dir, name, script).unwrap();
}

/// Issue 10.1: the runtime's NRI socket is gone (containerd stopped) when the kubelet
/// prepares a claim: the claim fails saying the runtime's NRI connection is down, with the
/// socket's path, and nothing is prepared. Once containerd is back and the plugin
/// registered again, the kubelet's retry prepares the claim and the pod gets its NIC.
#[tokio::test(flavor = "multi_thread")]
async fn prepare_refuses_while_the_nri_socket_is_gone_and_the_kubelets_retry_succeeds() {
    let mut node = start(1, &[]).await;
    let socket = node.nri_socket();
    let before = node
        .driver_log()
        .matches("NRI runtime disconnected")
        .count();
    node.stop_runtime().unwrap();
    // containerd may leave its socket file behind; the node is then as after a reboot
    // before containerd came up.
    if socket.exists() {
        std::fs::remove_file(&socket).unwrap();
    }
    node.wait_until("the driver noticed the runtime is gone", || {
        node.driver_log()
            .matches("NRI runtime disconnected")
            .count()
            > before
    })
    .await
    .unwrap();
    let pod_uid = uid(1);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = node
        .allocate(&[nic("early", "eth1", Some(cfg))], "early", &pod_uid)
        .await
        .unwrap();
    let outcome = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    let error = &outcome[&claim.uid].error;
    assert!(error.starts_with("claim default/early: "), "{error}");
    assert!(
        error.contains(&format!(
            "the container runtime's NRI connection is down (socket {})",
            socket.display()
        )),
        "{error}"
    );
    assert!(outcome[&claim.uid].devices.is_empty());
    assert_eq!(node.prepared_claims().unwrap(), json!({}));

    let registrations = node.nri_registrations();
    node.start_runtime().await.unwrap();
    // The kubelet retries a failed prepare; every failure until then says the same.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
        let error = &outcome[&claim.uid].error;
        if error.is_empty() {
            assert_eq!(outcome[&claim.uid].devices.len(), 1);
            break;
        }
        assert!(error.contains("NRI connection is down"), "{error}");
        assert!(
            Instant::now() < deadline,
            "still refused 30 s after containerd came back: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(node.nri_registrations() > registrations);
    let pod = node.run_pod("early", &pod_uid).await.unwrap().unwrap();
    assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.10/24"));
    node.delete_pod(pod).await.unwrap();
    unprepared_cleanly(&node, &[claim]).await;
}

/// Issue 10.2 and 10.7: pods run through CRI while the driver is stopped. At the next
/// Synchronize one gets its NIC late (claim `Ready` with reason `AttachedLate`, a Warning
/// Event); the other's NIC cannot be attached (a route the kernel refuses in the pod): its
/// claim says `NotAttached` with why, a Warning Event says so, and the NIC stays on the
/// node as it was. Then the driver restarts with the NIC in its pod and the node's slices
/// deleted: the device stays published (held from the checkpoint, since the host no longer
/// shows it).
#[tokio::test(flavor = "multi_thread")]
async fn pods_run_while_the_driver_was_away_get_their_nics_late_or_are_told_why_not() {
    let mut node = start(3, &[]).await;
    node.ip(&["link", "set", "eth2", "up"]).unwrap();
    let before_eth2 = host_view(&node.node_link("eth2").unwrap());
    let late_device = node.device_for("eth1").await.unwrap();
    let late_uid = uid(2);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let late = prepared(&node, &[nic("late", "eth1", Some(cfg))], "late", &late_uid).await;
    let broken_uid = uid(3);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.20/24"],
        "routes": [{"destination": "198.51.100.0/24", "gateway": "203.0.113.1"}]}));
    let broken = prepared(
        &node,
        &[nic("broken", "eth2", Some(cfg))],
        "broken",
        &broken_uid,
    )
    .await;

    node.stop_driver().unwrap();
    let late_pod = node.run_pod("late", &late_uid).await.unwrap().unwrap();
    let broken_pod = node.run_pod("broken", &broken_uid).await.unwrap().unwrap();
    assert!(
        node.in_pod(&late_pod, "ip", &["link", "show", "net1"])
            .is_err()
    );
    node.start_driver().await.unwrap();

    let condition = node
        .wait_for_ready_reason("late", "AttachedLate")
        .await
        .unwrap();
    assert_eq!(condition["status"], "True", "{condition}");
    assert!(has_addr(
        &pod_link(&node, &late_pod, "net1"),
        "192.0.2.10/24"
    ));
    node.in_pod(&late_pod, "ping", &["-c", "1", "-W", "2", "192.0.2.1"])
        .unwrap();
    let (kind, note) = node
        .wait_for_claim_event("late", "AttachedLate")
        .await
        .unwrap();
    assert_eq!(kind, "Warning");
    assert!(
        note.contains("attached after the pod had started"),
        "{note}"
    );

    let condition = node
        .wait_for_ready_reason("broken", "NotAttached")
        .await
        .unwrap();
    assert_eq!(condition["status"], "False", "{condition}");
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the pod runs without this device"),
        "{message}"
    );
    assert!(message.contains("interface.routes[0]"), "{message}");
    let (kind, note) = node
        .wait_for_claim_event("broken", "NotAttached")
        .await
        .unwrap();
    assert_eq!(kind, "Warning");
    assert!(note.contains("interface.routes[0]"), "{note}");
    assert_eq!(host_view(&node.node_link("eth2").unwrap()), before_eth2);
    assert!(!has_attachment(&recorded_nics(&node, &broken.uid)[0]));

    // 10.7: a restart with eth1 in its pod, the node's slices gone (as after a kubelet
    // restart): the first publication of the new driver still offers eth1's device.
    node.kill_driver().unwrap();
    let slices: Api<ResourceSlice> = Api::all(node.api.client());
    for slice in node.slices().await.unwrap() {
        let name = slice.metadata.name.unwrap();
        slices
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
    }
    assert!(node.slices().await.unwrap().is_empty());
    node.start_driver().await.unwrap();
    node.device_for("eth3").await.unwrap();
    let published: Vec<String> = node
        .slices()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|s| s.spec.devices.unwrap_or_default())
        .map(|d| d.name)
        .collect();
    assert!(
        published.contains(&late_device),
        "{late_device} (eth1, in its pod) is not published: {published:?}"
    );
    assert!(has_addr(
        &pod_link(&node, &late_pod, "net1"),
        "192.0.2.10/24"
    ));

    node.delete_pod(late_pod).await.unwrap();
    node.delete_pod(broken_pod).await.unwrap();
    unprepared_cleanly(&node, &[late, broken]).await;
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

/// Issue 10.3: a CNI chain whose last plugin sleeps far past containerd's
/// `plugin_request_timeout`, while 12 other sandboxes start at the same time (10 without
/// claims, 2 with moved NICs). The slow sandbox fails with netclaim's own answer (so
/// within containerd's deadline), naming `plugin_request_timeout`; the chain's DEL ran
/// (host-local's lease, which the plugin saw in its ADD input, is released); the plugin
/// stays registered (containerd closed nothing); every other sandbox runs, the two with
/// claims with their NICs.
#[tokio::test(flavor = "multi_thread")]
async fn a_cni_plugin_past_the_deadline_fails_only_its_sandbox() {
    let bin = tempfile::tempdir().unwrap();
    let leases = tempfile::tempdir().unwrap();
    let d = bin.path().display();
    write_plugin(
        bin.path(),
        "sleeper",
        &format!(
            r#"#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}}' ;;
ADD) cat > {d}/add-stdin; sleep 30 ;;
DEL) cat >/dev/null; echo DEL >> {d}/dels ;;
*) cat >/dev/null ;;
esac
"#
        ),
    );
    let bin_dir = bin.path().display().to_string();
    let mut node = start(
        3,
        &[
            "--cni-bin-dir",
            &bin_dir,
            "--cni-bin-dir",
            "/usr/lib/cni",
            "--cni-allowed-plugins",
            "macvlan,host-local,sleeper",
        ],
    )
    .await;
    node.ip(&["link", "set", "eth3", "up"]).unwrap();
    let slow_uid = uid(4);
    // The class's network (a claim may not choose host-local's dataDir).
    let slow_claim = cni_nic(
        "slow",
        "eth3",
        json!({"cniVersion": "1.0.0", "name": "slownet", "plugins": [
            {"type": "macvlan", "mode": "bridge", "ipam": {
                "type": "host-local", "dataDir": leases.path().display().to_string(),
                "ranges": [[{"subnet": "192.0.2.0/24",
                             "rangeStart": "192.0.2.60", "rangeEnd": "192.0.2.60"}]]}},
            {"type": "sleeper"}
        ]}),
    );
    let slow = prepared(&node, &[slow_claim], "slow", &slow_uid).await;
    let mut claims = vec![slow];
    let mut runs = vec![PodRun::new("slow", &slow_uid)];
    for (i, if_name) in ["eth1", "eth2"].into_iter().enumerate() {
        let (name, pod_uid) = (format!("moved-{i}"), uid(10 + u32::try_from(i).unwrap()));
        let cfg =
            config(json!({"name": "net1", "addresses": [format!("198.51.100.{}/24", 10 + i)]}));
        claims.push(prepared(&node, &[nic(&name, if_name, Some(cfg))], &name, &pod_uid).await);
        runs.push(PodRun::new(&name, &pod_uid));
    }
    for i in 0..10 {
        runs.push(PodRun::new(&format!("plain-{i}"), &uid(20 + i)));
    }
    let registrations = node.nri_registrations();

    let outcomes = node.run_pods_at_once(&runs).await.unwrap();
    let mut outcomes = outcomes.into_iter();
    let error = outcomes.next().unwrap().unwrap_err();
    assert!(error.contains("claim default/slow"), "{error}");
    assert!(error.contains("sleeper"), "{error}");
    assert!(error.contains("plugin_request_timeout"), "{error}");
    let mut pods = Vec::new();
    for (run, outcome) in runs[1..].iter().zip(outcomes) {
        let pod = outcome.unwrap_or_else(|e| panic!("sandbox {} failed: {e}", run.name));
        pods.push(pod);
    }
    for (i, pod) in pods[..2].iter().enumerate() {
        let address = format!("198.51.100.{}/24", 10 + i);
        assert!(
            has_addr(&pod_link(&node, pod, "net1"), &address),
            "{}",
            pod.name
        );
    }
    let add_input = std::fs::read_to_string(bin.path().join("add-stdin")).unwrap();
    assert!(
        add_input.contains("192.0.2.60"),
        "the sleeper's ADD did not get macvlan's lease: {add_input}"
    );
    assert!(
        !leases.path().join("slownet").join("192.0.2.60").exists(),
        "the chain's DEL did not run: the lease is still taken"
    );
    assert!(
        bin.path().join("dels").exists(),
        "the sleeper's DEL did not run"
    );
    assert_eq!(
        node.nri_registrations(),
        registrations,
        "the plugin registered again: containerd dropped it"
    );
    let closed = node.containerd().unwrap().log_lines("closing plugin");
    assert!(closed.is_empty(), "containerd closed a plugin: {closed:?}");
    assert!(!has_attachment(&recorded_nics(&node, &claims[0].uid)[0]));

    for pod in pods {
        node.delete_pod(pod).await.unwrap();
    }
    unprepared_cleanly(&node, &claims).await;
    assert!(node.runtime_pods().await.unwrap().is_empty());
}

/// Issue 10.4: two sandboxes of one pod (attempts 0 and 1) race for its CNI claim: one
/// gets the network, the other fails naming it, and no lease is freed under the running
/// pod: the failed sandbox's STOP and REMOVE leave it, and the CNI GC after the next
/// Synchronize gets the running attachment as valid and keeps its lease. The network is a
/// CNI 1.1.0 test plugin that keeps one lease file per sandbox and, at GC, drops the
/// leases of attachments it is not told are valid (what an IPAM plugin's GC does); its
/// `gc.json` (GC's stdin) appears, by rename, only once that GC is done.
#[tokio::test(flavor = "multi_thread")]
async fn two_sandboxes_racing_for_one_cni_claim_leave_one_attachment_and_its_lease() {
    let bin = tempfile::tempdir().unwrap();
    let d = bin.path().display();
    std::fs::create_dir(bin.path().join("leases")).unwrap();
    write_plugin(
        bin.path(),
        "leaser",
        &format!(
            r#"#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}}' ;;
STATUS) cat >/dev/null ;;
ADD) cat >/dev/null; echo "$CNI_IFNAME" > {d}/leases/$CNI_CONTAINERID
  echo '{{"cniVersion":"1.1.0","interfaces":[],"ips":[]}}' ;;
DEL) cat >/dev/null; rm -f {d}/leases/$CNI_CONTAINERID ;;
GC) cat > {d}/gc.json.tmp
  for lease in {d}/leases/*; do
    [ -e "$lease" ] || continue
    id=$(basename "$lease")
    grep -q "\"containerID\":\"$id\"" {d}/gc.json.tmp || rm -f "$lease"
  done
  mv {d}/gc.json.tmp {d}/gc.json ;;
*) cat >/dev/null ;;
esac
"#
        ),
    );
    let bin_dir = bin.path().display().to_string();
    let mut node = start(
        1,
        &["--cni-bin-dir", &bin_dir, "--cni-allowed-plugins", "leaser"],
    )
    .await;
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let pod_uid = uid(5);
    let leased = cni_nic(
        "raced",
        "eth1",
        json!({"cniVersion": "1.1.0", "name": "leasenet", "plugins": [{"type": "leaser"}]}),
    );
    let claim = prepared(&node, &[leased], "raced", &pod_uid).await;
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
            "attached to another pod sandbox ({}",
            winner.sandbox_id
        )),
        "{error}"
    );
    let lease = bin.path().join("leases").join(&winner.sandbox_id);
    let leases = || {
        std::fs::read_dir(bin.path().join("leases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        leases(),
        std::slice::from_ref(&winner.sandbox_id),
        "one attachment, one lease"
    );
    let nics = recorded_nics(&node, &claim.uid);
    assert_eq!(
        nics[0]["attachment"]["sandboxId"],
        winner.sandbox_id.as_str()
    );

    // The next Synchronize (the driver restarts) runs GC with the live attachment valid.
    node.kill_driver().unwrap();
    node.start_driver().await.unwrap();
    let gc = bin.path().join("gc.json");
    node.wait_until("GC ran after Synchronize", || gc.exists())
        .await
        .unwrap();
    let stdin: Value = serde_json::from_str(&std::fs::read_to_string(&gc).unwrap()).unwrap();
    assert_eq!(
        stdin["cni.dev/valid-attachments"],
        json!([{"containerID": winner.sandbox_id, "ifname": "net1"}])
    );
    assert!(lease.exists(), "GC freed the running pod's lease");

    node.delete_pod(winner).await.unwrap();
    assert!(!lease.exists(), "DEL did not run at STOP");
    unprepared_cleanly(&node, &[claim]).await;
}

/// Issue 10.5 and 11: a pod's second NIC is refused by the kernel, and giving back the
/// first one fails (injected, three times: the rollback, and containerd's STOP and
/// REMOVE that follow the failed sandbox). The sandbox fails naming the refused field;
/// the first NIC's record says `DetachFailed` and a Warning Event says so; the driver
/// keeps the dead sandbox's netns, so the NIC survives containerd removing it. At the
/// next Synchronize (containerd restarts) the NIC comes back exactly.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_rollback_is_recorded_and_the_next_synchronize_brings_the_nic_back() {
    let fault = ["--inject-fault", "give-back-fails-once"];
    let mut node = start(2, &[fault, fault, fault].concat()).await;
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let before = ["eth1", "eth2"].map(|n| host_view(&node.node_link(n).unwrap()));
    let pod_uid = uid(6);
    let first = NicClaim {
        request: "first".into(),
        ..nic(
            "stuck",
            "eth1",
            Some(config(
                json!({"name": "net1", "addresses": ["192.0.2.10/24"]}),
            )),
        )
    };
    let second = NicClaim {
        request: "second".into(),
        ..nic(
            "stuck",
            "eth2",
            Some(config(
                json!({"name": "net2", "addresses": ["198.51.100.10/24"],
                "routes": [{"destination": "203.0.113.128/25", "gateway": "203.0.113.1"}]}),
            )),
        )
    };
    let claim = prepared(&node, &[first, second], "stuck", &pod_uid).await;

    let error = node.run_pod("stuck", &pod_uid).await.unwrap().unwrap_err();
    assert!(error.contains("claim default/stuck"), "{error}");
    assert!(error.contains("interface.routes[0]"), "{error}");
    let nics = recorded_nics(&node, &claim.uid);
    assert_eq!(nics[0]["attachment"]["phase"], "detachFailed", "{nics:?}");
    assert!(!has_attachment(&nics[1]), "{nics:?}");
    assert_eq!(
        node.driver_log().matches("injecting a fault").count(),
        3,
        "the rollback, STOP and REMOVE should each have tried"
    );
    let (kind, note) = node
        .wait_for_claim_event("stuck", "DetachFailed")
        .await
        .unwrap();
    assert_eq!(kind, "Warning");
    assert!(note.contains("injected fault"), "{note}");
    assert!(
        node.node_link("eth1").is_err(),
        "eth1 came back before the Synchronize"
    );
    assert!(
        node.runtime_pods().await.unwrap().is_empty(),
        "containerd kept the failed sandbox"
    );
    assert!(
        node.lan().has_link("peer1"),
        "eth1 died with the failed sandbox's netns"
    );
    assert_eq!(host_view(&node.node_link("eth2").unwrap()), before[1]);

    let registrations = node.nri_registrations();
    node.restart_runtime().await.unwrap();
    node.wait_until("the plugin re-registered with containerd", || {
        node.nri_registrations() > registrations
    })
    .await
    .unwrap();
    node.wait_until("eth1 is back on the node", || {
        node.node_link("eth1").is_ok()
    })
    .await
    .unwrap();
    node.wait_until("the record has no attachment", || {
        !recorded_nics(&node, &claim.uid).iter().any(has_attachment)
    })
    .await
    .unwrap();
    let after = ["eth1", "eth2"].map(|n| host_view(&node.node_link(n).unwrap()));
    assert_eq!(after, before);
    unprepared_cleanly(&node, &[claim]).await;
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

/// A CNI 1.0.0 test plugin `gate` to chain last: its ADD says it started
/// (`<dir>/started`), waits (at most 20 s) until `<dir>/release` exists, and passes the
/// previous result on; DEL is logged to `<dir>/dels`.
fn write_gate_plugin(dir: &Path) {
    let d = dir.display();
    // The previous result is cut out of the plugin's compact stdin: it is the value of
    // "prevResult", followed by `,"type":"gate"` (netclaim sends the keys sorted).
    write_plugin(
        dir,
        "gate",
        &format!(
            r#"#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}}' ;;
ADD) input=$(cat); touch {d}/started
  n=0
  while [ ! -e {d}/release ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done
  printf '%s' "$input" | sed -e 's/^.*"prevResult"://' -e 's/,"type":"gate"}}$/}}/' -e 's/}}$//' ;;
DEL) cat >/dev/null; echo DEL >> {d}/dels ;;
*) cat >/dev/null ;;
esac
"#
        ),
    );
}

/// Issue 11: a real SIGKILL of netclaim in the middle of a RunPodSandbox on containerd:
/// the RUN hook is inside the CNI chain (macvlan made `net1` in the pod and host-local
/// took the lease; the last plugin has not answered). containerd drops the dead plugin
/// and the sandbox starts without it. The restarted driver's Synchronize finds the live
/// pod with its attachment still `Attaching` and finishes it: the pod gets `net1` with the
/// lease, the claim says `AttachedLate` (a Warning Event too); the pod's end DELs the
/// network and the node is clean.
#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_mid_run_pod_sandbox_leaves_a_running_pod_that_gets_its_nic_late() {
    let bin = tempfile::tempdir().unwrap();
    let leases = tempfile::tempdir().unwrap();
    write_gate_plugin(bin.path());
    let bin_dir = bin.path().display().to_string();
    let mut node = start(
        1,
        &[
            "--cni-bin-dir",
            &bin_dir,
            "--cni-bin-dir",
            "/usr/lib/cni",
            "--cni-allowed-plugins",
            "macvlan,host-local,gate",
        ],
    )
    .await;
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let before = host_view(&node.node_link("eth1").unwrap());
    let lease = leases.path().join("gatenet").join("192.0.2.60");
    let pod_uid = uid(30);
    // The class's network (a claim may not choose host-local's dataDir).
    let gated = cni_nic(
        "killed",
        "eth1",
        json!({"cniVersion": "1.0.0", "name": "gatenet", "plugins": [
            {"type": "macvlan", "mode": "bridge", "ipam": {
                "type": "host-local", "dataDir": leases.path().display().to_string(),
                "ranges": [[{"subnet": "192.0.2.0/24",
                             "rangeStart": "192.0.2.60", "rangeEnd": "192.0.2.60"}]]}},
            {"type": "gate"}
        ]}),
    );
    let claim = prepared(&node, &[gated], "killed", &pod_uid).await;
    let registrations = node.nri_registrations();

    let pid = nix::unistd::Pid::from_raw(i32::try_from(node.driver_pid().unwrap()).unwrap());
    let started = bin.path().join("started");
    let killer = async {
        // Inside the hook: the chain's last plugin is running (well inside the hook's
        // budget: it has only just started).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !started.exists() {
            assert!(
                Instant::now() < deadline,
                "the RUN hook's ADD never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    };
    let (run, ()) = tokio::join!(node.run_pod("killed", &pod_uid), killer);
    let pod = run
        .unwrap()
        .unwrap_or_else(|error| panic!("containerd failed the sandbox: {error}"));
    assert!(
        lease.exists(),
        "host-local's ADD did not run before the kill"
    );
    let recorded = recorded_nics(&node, &claim.uid);
    assert_eq!(
        recorded[0]["attachment"]["phase"], "attaching",
        "{recorded:?}"
    );
    // containerd 1.7.24 and 2.1.9 log "closing plugin 10-netclaim, failed to handle event
    // 1: ttrpc: closed" and go on with the sandbox.
    let closed = node
        .containerd()
        .unwrap()
        .log_lines("closing plugin 10-netclaim");
    assert_eq!(
        closed.len(),
        1,
        "containerd did not drop the dead plugin: {closed:?}"
    );

    std::fs::write(bin.path().join("release"), "").unwrap();
    node.kill_driver().unwrap();
    node.start_driver().await.unwrap();
    assert!(node.nri_registrations() > registrations);
    let condition = node
        .wait_for_ready_reason("killed", "AttachedLate")
        .await
        .unwrap();
    assert_eq!(condition["status"], "True", "{condition}");
    let (kind, _) = node
        .wait_for_claim_event("killed", "AttachedLate")
        .await
        .unwrap();
    assert_eq!(kind, "Warning");
    node.wait_until("the record says attached", || {
        recorded_nics(&node, &claim.uid)[0]["attachment"]["phase"] == "attached"
    })
    .await
    .unwrap();
    assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.60/24"));
    node.in_pod(&pod, "ping", &["-c", "1", "-W", "2", "192.0.2.1"])
        .unwrap();
    assert!(lease.exists());

    node.delete_pod(pod).await.unwrap();
    assert!(!lease.exists(), "the lease outlived the pod");
    node.wait_until("the checkpoint has no attachment left", || {
        !recorded_nics(&node, &claim.uid).iter().any(has_attachment)
    })
    .await
    .unwrap();
    unprepared_cleanly(&node, &[claim]).await;
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

/// Issue 11: netclaim dies (abort, at a crash point) inside the RUN hook of a pod with a
/// moved NIC on containerd, before the move (`attach-recorded`) or after the NIC was
/// configured in the pod but before the checkpoint says so (`attach-moved`). containerd
/// drops the plugin and the sandbox runs; the restarted driver's Synchronize finishes the
/// attach (`AttachedLate`), and the NIC comes back to the node exactly when the pod ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_inside_the_run_hook_on_containerd_converges_at_the_next_synchronize() {
    for (n, point) in [(31, "attach-recorded"), (32, "attach-moved")] {
        let mut node = start(1, &["--crash-at", point]).await;
        node.ip(&["link", "set", "eth1", "up"]).unwrap();
        let before = host_view(&node.node_link("eth1").unwrap());
        let pod_uid = uid(n);
        let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
        let claim = prepared(
            &node,
            &[nic("crashy", "eth1", Some(cfg))],
            "crashy",
            &pod_uid,
        )
        .await;
        let pod = node
            .run_pod("crashy", &pod_uid)
            .await
            .unwrap()
            .unwrap_or_else(|error| panic!("{point}: containerd failed the sandbox: {error}"));
        let recorded = recorded_nics(&node, &claim.uid);
        assert_eq!(
            recorded[0]["attachment"]["phase"], "attaching",
            "{point}: {recorded:?}"
        );
        node.kill_driver().unwrap();
        node.set_driver_args(Vec::new());
        node.start_driver().await.unwrap();
        let condition = node
            .wait_for_ready_reason("crashy", "AttachedLate")
            .await
            .unwrap();
        assert_eq!(condition["status"], "True", "{point}: {condition}");
        assert!(
            has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.10/24"),
            "{point}"
        );
        node.in_pod(&pod, "ping", &["-c", "1", "-W", "2", "192.0.2.1"])
            .unwrap();
        node.delete_pod(pod).await.unwrap();
        assert_eq!(
            host_view(&node.node_link("eth1").unwrap()),
            before,
            "{point}"
        );
        unprepared_cleanly(&node, &[claim]).await;
        assert_eq!(node.prepared_claims().unwrap(), json!({}), "{point}");
    }
}
