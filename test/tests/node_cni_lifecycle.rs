//! CNI mode's lifecycle beyond a plain ADD and DEL, through the real `netclaim` binary
//! with the NRI runtime stand-in and the Debian CNI plugins:
//! - whenever a pod's ADD ran, a DEL runs later, even when the driver died in
//!   between, the pod went away while the driver was down, or the driver died inside ADD;
//! - CNI 1.1 STATUS gates ADD and GC runs after Synchronize (with a 1.1.0 test plugin:
//!   Debian's plugins speak up to 1.0.0);
//! - `netclaim check` runs CHECK on request and reports what the plugins found.
//!
//! The evidence that DEL ran is the host-local IPAM reservation: host-local writes one
//! file per leased address in its `dataDir` (here a directory of the test), and only a DEL
//! through the macvlan plugin removes it. A leaked reservation is exactly what an operator
//! would see as an IP pool that slowly runs dry.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use netclaim_test::node::checks::{self, has_addr};
use netclaim_test::node::{NicClaim, NodeOptions, TestNode, TestPod};
use serde_json::{Value, json};

const NETWORK: &str = "leasenet";
/// The one address host-local may lease (a range of one makes the leased address known).
const LEASED: &str = "192.0.2.60";

fn uid(n: u32) -> String {
    format!(
        "00000000-0000-4000-8000-{:012x}",
        u64::from(n) + u64::from(std::process::id()) * 1000 + 700
    )
}

/// A macvlan on `eth1` (substituted from the device) with a host-local lease kept in
/// `data_dir`: the admin's class network (a claim may not choose a dataDir).
fn leased_claim(name: &str, data_dir: &Path) -> NicClaim {
    checks::cni_nic(
        name,
        "eth1",
        json!({
            "cniVersion": "1.0.0", "name": NETWORK,
            "plugins": [{"type": "macvlan", "mode": "bridge", "ipam": {
                "type": "host-local",
                "dataDir": data_dir.display().to_string(),
                "ranges": [[{"subnet": "192.0.2.0/24",
                             "rangeStart": LEASED, "rangeEnd": LEASED}]]
            }}]
        }),
    )
}

/// The file host-local keeps while [`LEASED`] is leased.
fn lease_file(data_dir: &Path) -> PathBuf {
    data_dir.join(NETWORK).join(LEASED)
}

fn cache_files(node: &TestNode) -> Vec<String> {
    match std::fs::read_dir(node.state_dir().join("cni-cache")) {
        Ok(dir) => dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn net1(node: &TestNode, pod: &TestPod) -> Option<Value> {
    let out = node.in_pod(pod, "ip", &["-j", "-d", "addr"]).unwrap();
    let links: Vec<Value> = serde_json::from_str(&out).unwrap();
    links.into_iter().find(|l| l["ifname"] == "net1")
}

/// A node with `eth1` up, the driver started with `extra_args`, and one claim of `eth1`
/// prepared for pod `pod_uid`.
async fn node_with_prepared_claim(
    extra_args: &[&str],
    claim: NicClaim,
    pod: &str,
    pod_uid: &str,
) -> (TestNode, kubeletplugin::ClaimRef) {
    let node = TestNode::start(NodeOptions {
        extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let claim = node.allocate(&[claim], pod, pod_uid).await.unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "", "prepare failed");
    (node, claim)
}

/// Unprepares `claim` and checks nothing of it is left: no lease, no cache entry, no
/// checkpoint entry, and the parent NIC still on the node.
async fn unprepare_and_check_clean(node: &TestNode, claim: kubeletplugin::ClaimRef, leases: &Path) {
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
    assert!(!lease_file(leases).exists(), "the IPAM lease leaked");
    assert_eq!(
        cache_files(node),
        Vec::<String>::new(),
        "CNI cache entry left"
    );
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
    if let Err(error) = node.node_link("eth1") {
        panic!("eth1 left the node: {error:#}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn del_runs_when_the_pod_stops_after_a_driver_sigkill() {
    let leases = tempfile::tempdir().unwrap();
    let pod_uid = uid(1);
    let (mut node, claim) =
        node_with_prepared_claim(&[], leased_claim("killed", leases.path()), "k", &pod_uid).await;
    let pod = node.run_pod("k", &pod_uid).await.unwrap().unwrap();
    assert!(lease_file(leases.path()).exists(), "ADD leased nothing");

    node.kill_driver().unwrap();
    node.start_driver().await.unwrap();
    // The restarted driver found the attachment complete and left it alone.
    let link = net1(&node, &pod).expect("net1 is gone from the pod after the restart");
    assert!(has_addr(&link, &format!("{LEASED}/24")), "{link}");
    assert_eq!(cache_files(&node).len(), 1);

    node.delete_pod(pod).await.unwrap();
    assert!(
        !lease_file(leases.path()).exists(),
        "DEL did not run at STOP after the restart"
    );
    unprepare_and_check_clean(&node, claim, leases.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn del_runs_at_restart_for_a_pod_removed_while_the_driver_was_down() {
    let leases = tempfile::tempdir().unwrap();
    let pod_uid = uid(2);
    let (mut node, claim) =
        node_with_prepared_claim(&[], leased_claim("orphan", leases.path()), "o", &pod_uid).await;
    let pod = node.run_pod("o", &pod_uid).await.unwrap().unwrap();
    assert!(lease_file(leases.path()).exists());

    node.kill_driver().unwrap();
    node.remove_pod_while_driver_is_away(pod).unwrap();
    node.start_driver().await.unwrap();
    // Synchronize no longer lists the pod: reconcile runs DEL from the checkpoint and the
    // CNI cache, with the pod's netns already gone (plugins must tolerate that).
    node.wait_until("the orphaned lease is released", || {
        !lease_file(leases.path()).exists()
    })
    .await
    .unwrap();
    node.wait_until("the CNI cache entry is gone", || {
        cache_files(&node).is_empty()
    })
    .await
    .unwrap();
    unprepare_and_check_clean(&node, claim, leases.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unprepare_runs_del_for_a_pod_whose_stop_never_came() {
    let leases = tempfile::tempdir().unwrap();
    let pod_uid = uid(3);
    let (mut node, claim) =
        node_with_prepared_claim(&[], leased_claim("nostop", leases.path()), "n", &pod_uid).await;
    let pod = node.run_pod("n", &pod_uid).await.unwrap().unwrap();
    node.kill_driver().unwrap();
    node.start_driver().await.unwrap();

    // As after a containerd restart: the kubelet unprepares, no STOP ever arrives.
    unprepare_and_check_clean(&node, claim, leases.path()).await;
    assert!(net1(&node, &pod).is_none(), "DEL left net1 in the pod");
}

/// The driver dies inside the RUN hook at `point` ("attach-recorded": before ADD ran;
/// "attach-moved": after ADD ran, before the checkpoint says so). As containerd does, the
/// runtime drops the plugin and the sandbox runs without it; the restarted driver's
/// Synchronize lists the pod and must finish the attach (net1 with its lease in the pod),
/// and the pod's STOP must DEL it.
async fn crash_inside_add_converges(point: &str, n: u32) {
    let leases = tempfile::tempdir().unwrap();
    let pod_uid = uid(n);
    let (mut node, claim) = node_with_prepared_claim(
        &["--crash-at", point],
        leased_claim("crashy", leases.path()),
        "c",
        &pod_uid,
    )
    .await;
    let run = node.run_pod("c", &pod_uid).await.unwrap();
    let pod = run.expect("the sandbox runs: containerd drops a plugin that dies mid-call");
    node.kill_driver().ok();
    node.set_driver_args(Vec::new());
    node.start_driver().await.unwrap();
    // The user is told: the claim says the network came late.
    let condition = node
        .wait_for_ready_reason("crashy", "AttachedLate")
        .await
        .unwrap();
    assert_eq!(condition["status"], "True", "{condition}");
    let link = net1(&node, &pod).unwrap();
    assert!(has_addr(&link, &format!("{LEASED}/24")), "{link}");
    node.delete_pod(pod).await.unwrap();
    assert!(
        !lease_file(leases.path()).exists(),
        "DEL did not run at STOP; the driver's log:\n{}",
        node.driver_log()
    );
    node.wait_until("the checkpoint has no attachment left", || {
        node.prepared_claims().is_ok_and(|c| {
            c[&claim.uid]["nics"][0]
                .get("attachment")
                .is_none_or(Value::is_null)
        })
    })
    .await
    .unwrap();
    unprepare_and_check_clean(&node, claim, leases.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_add_converges() {
    crash_inside_add_converges("attach-recorded", 4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_add_before_it_is_recorded_converges() {
    crash_inside_add_converges("attach-moved", 5).await;
}

/// A CNI 1.1.0 test plugin: STATUS fails with code 50 while `<dir>/notready` exists, every
/// ADD and DEL is logged to `<dir>/calls`, and GC's stdin is kept in `<dir>/gc.json`.
fn write_v11_plugin(dir: &Path) {
    let d = dir.display();
    let script = format!(
        r#"#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}}' ;;
STATUS) cat >/dev/null
  if [ -e {d}/notready ]; then
    echo '{{"cniVersion":"1.1.0","code":50,"msg":"datastore not ready"}}'; exit 1
  fi ;;
ADD) cat >/dev/null; echo "ADD $CNI_CONTAINERID $CNI_IFNAME" >> {d}/calls
  echo '{{"cniVersion":"1.1.0","interfaces":[],"ips":[]}}' ;;
DEL) cat >/dev/null; echo "DEL $CNI_CONTAINERID $CNI_IFNAME" >> {d}/calls ;;
GC) cat > {d}/gc.json.tmp && mv {d}/gc.json.tmp {d}/gc.json ;;
*) cat >/dev/null ;;
esac
"#
    );
    let path = dir.join("v11");
    std::fs::write(&path, script).unwrap();
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).unwrap();
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_gates_add_and_gc_runs_after_a_restart_with_the_live_attachments() {
    let bin = tempfile::tempdir().unwrap();
    write_v11_plugin(bin.path());
    std::fs::write(bin.path().join("notready"), "").unwrap();
    let bin_dir = bin.path().display().to_string();
    let claim = checks::cni_nic(
        "v11",
        "eth1",
        json!({"cniVersion": "1.1.0", "name": "v11net", "plugins": [{"type": "v11"}]}),
    );
    let pod_uid = uid(6);
    // The test plugin is the only type this node's admin allows.
    let (mut node, claim) = node_with_prepared_claim(
        &["--cni-bin-dir", &bin_dir, "--cni-allowed-plugins", "v11"],
        claim,
        "v",
        &pod_uid,
    )
    .await;

    // The plugin is not ready: the sandbox fails with its message, and ADD never ran.
    let error = node.run_pod("v", &pod_uid).await.unwrap().unwrap_err();
    assert!(error.contains("not ready"), "{error}");
    assert!(error.contains("datastore not ready"), "{error}");
    assert!(
        !calls(bin.path()).iter().any(|c| c.starts_with("ADD")),
        "{:?}",
        calls(bin.path())
    );

    std::fs::remove_file(bin.path().join("notready")).unwrap();
    let pod = node.run_pod("v", &pod_uid).await.unwrap().unwrap();
    let add = format!("ADD {} net1", pod.sandbox_id);
    assert!(calls(bin.path()).contains(&add), "{:?}", calls(bin.path()));

    // After a restart, Synchronize is followed by GC naming the live attachment as valid.
    let gc = bin.path().join("gc.json");
    std::fs::remove_file(&gc).ok();
    node.kill_driver().unwrap();
    node.start_driver().await.unwrap();
    node.wait_until("GC ran after Synchronize", || gc.exists())
        .await
        .unwrap();
    let stdin: Value = serde_json::from_str(&std::fs::read_to_string(&gc).unwrap()).unwrap();
    assert_eq!(stdin["name"], "v11net");
    assert_eq!(
        stdin["cni.dev/valid-attachments"],
        json!([{"containerID": pod.sandbox_id, "ifname": "net1"}])
    );

    let del = format!("DEL {} net1", pod.sandbox_id);
    node.delete_pod(pod).await.unwrap();
    assert!(calls(bin.path()).contains(&del), "{:?}", calls(bin.path()));
    let unprepared = node.unprepare(&[claim]).await.unwrap();
    assert!(unprepared.values().all(String::is_empty), "{unprepared:?}");
}

/// `netclaim check` as an operator runs it next to the daemon (in the node's netns).
fn netclaim_check(node: &TestNode, extra: &[&str]) -> (bool, String) {
    let binary = netclaim_test::node::netclaim_binary().unwrap();
    let state_dir = node.state_dir().display().to_string();
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", node.netns()))
        .arg(binary)
        .args(["check", "--state-dir", &state_dir])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn check_on_request_passes_then_reports_what_the_plugin_finds_wrong() {
    let leases = tempfile::tempdir().unwrap();
    let pod_uid = uid(7);
    let (mut node, claim) =
        node_with_prepared_claim(&[], leased_claim("checked", leases.path()), "ck", &pod_uid).await;
    let (passed, output) = netclaim_check(&node, &[]);
    assert!(passed, "{output}");
    assert!(output.contains("no CNI-mode attachments"), "{output}");

    let pod = node.run_pod("ck", &pod_uid).await.unwrap().unwrap();
    let (passed, output) = netclaim_check(&node, &["--claim", "default/checked"]);
    assert!(passed, "{output}");
    assert!(
        output.contains("claim default/checked") && output.contains(": OK"),
        "{output}"
    );

    // Someone removes the address the IPAM handed out: CHECK (macvlan compares the pod's
    // interface with the cached ADD result) must say so.
    node.in_pod(&pod, "ip", &["addr", "flush", "dev", "net1"])
        .unwrap();
    let (passed, output) = netclaim_check(&node, &[]);
    assert!(!passed, "{output}");
    assert!(output.contains("FAILED"), "{output}");
    assert!(
        output.contains(LEASED),
        "the plugin's message is missing: {output}"
    );

    node.delete_pod(pod).await.unwrap();
    unprepare_and_check_clean(&node, claim, leases.path()).await;
}
