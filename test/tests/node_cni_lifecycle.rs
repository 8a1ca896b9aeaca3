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
use netclaim_test::node::{NicClaim, NodeOptions, PodRun, TestNode, TestPod};
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
    netclaim_test::netns::write_executable(dir, "v11", &script).unwrap();
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

/// A CNI 1.0.0 test plugin `ctl` to chain after the leased macvlan: it passes the previous
/// result on, logs each ADD and DEL to `<dir>/calls`, and fails on request: ADD with an
/// error while `<dir>/add-fails` exists, ADD with output that is no CNI result while
/// `<dir>/add-garbage` exists, DEL while `<dir>/del-fails` exists.
fn write_ctl_plugin(dir: &Path) {
    let d = dir.display();
    // The previous result is cut out of the plugin's compact stdin: it is the value of
    // "prevResult", followed by nothing or by `,"type":"ctl"` (keys sorted).
    let script = format!(
        r#"#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
ADD) input=$(cat); echo "ADD $CNI_CONTAINERID" >> {d}/calls
  if [ -e {d}/add-fails ]; then
    echo '{{"cniVersion":"1.0.0","code":100,"msg":"ctl refuses ADD"}}'; exit 1
  fi
  if [ -e {d}/add-garbage ]; then echo 'this is no CNI result'; exit 0; fi
  printf '%s' "$input" | sed -e 's/^.*"prevResult"://' -e 's/,"type":"ctl"}}$/}}/' -e 's/}}$//' ;;
DEL) cat >/dev/null; echo "DEL $CNI_CONTAINERID" >> {d}/calls
  if [ -e {d}/del-fails ]; then
    echo '{{"cniVersion":"1.0.0","code":101,"msg":"ctl refuses DEL"}}'; exit 1
  fi ;;
*) cat >/dev/null ;;
esac
"#
    );
    netclaim_test::netns::write_executable(dir, "ctl", &script).unwrap();
}

/// The leased macvlan claim with `ctl` chained after it (the class's network).
fn controlled_claim(name: &str, leases: &Path) -> NicClaim {
    let mut claim = leased_claim(name, leases);
    let plugins = claim
        .class_config
        .as_mut()
        .and_then(|c| c["cni"]["plugins"].as_array_mut())
        .unwrap();
    plugins.push(json!({"type": "ctl"}));
    claim
}

/// A node whose driver finds `ctl` (in `bin`) and the Debian plugins, with the controlled
/// claim prepared for pod `pod_uid`.
async fn node_with_controlled_claim(
    bin: &Path,
    leases: &Path,
    name: &str,
    pod_uid: &str,
) -> (TestNode, kubeletplugin::ClaimRef) {
    write_ctl_plugin(bin);
    let bin_dir = bin.display().to_string();
    node_with_prepared_claim(
        &[
            "--cni-bin-dir",
            &bin_dir,
            "--cni-bin-dir",
            "/usr/lib/cni",
            // The test plugin is on this node's allowlist next to the chain's others.
            "--cni-allowed-plugins",
            "macvlan,host-local,ctl",
        ],
        controlled_claim(name, leases),
        name,
        pod_uid,
    )
    .await
}

fn recorded_nic(node: &TestNode, uid: &str) -> Value {
    node.prepared_claims().unwrap()[uid]["nics"][0].clone()
}

fn has_attachment(nic: &Value) -> bool {
    nic.get("attachment").is_some_and(|a| !a.is_null())
}

/// Issue 11: ADD fails after macvlan took its lease, and the cleanup (DEL of the whole
/// list) fails too. The sandbox fails saying both and that netclaim keeps retrying; the
/// lease is released by the DEL that did work; the record keeps the give-back pending
/// (`DetachFailed`, with an Event), which the runtime's STOP and REMOVE retry, and the
/// next Synchronize finishes once DEL works.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_cleanup_is_told_kept_and_retried_until_del_works() {
    let (bin, leases) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pod_uid = uid(8);
    let (mut node, claim) =
        node_with_controlled_claim(bin.path(), leases.path(), "cleanup", &pod_uid).await;
    std::fs::write(bin.path().join("add-fails"), "").unwrap();
    std::fs::write(bin.path().join("del-fails"), "").unwrap();

    let error = node
        .run_pod("cleanup", &pod_uid)
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.contains("claim default/cleanup"), "{error}");
    assert!(error.contains("ctl refuses ADD"), "{error}");
    assert!(error.contains("undoing it failed too"), "{error}");
    assert!(error.contains("ctl refuses DEL"), "{error}");
    assert!(error.contains("netclaim keeps retrying"), "{error}");
    assert!(
        !lease_file(leases.path()).exists(),
        "macvlan's DEL did not run in the cleanup"
    );
    assert_eq!(cache_files(&node), Vec::<String>::new());
    let nic = recorded_nic(&node, &claim.uid);
    assert_eq!(nic["attachment"]["phase"], "detachFailed", "{nic}");
    assert_eq!(nic["failure"]["reason"], "AttachFailed", "{nic}");
    let (kind, note) = node
        .wait_for_claim_event("cleanup", "DetachFailed")
        .await
        .unwrap();
    assert_eq!(kind, "Warning");
    assert!(note.contains("ctl refuses DEL"), "{note}");
    let condition = node
        .wait_for_ready_reason("cleanup", "AttachFailed")
        .await
        .unwrap();
    assert_eq!(condition["status"], "False", "{condition}");
    // The runtime's STOP and REMOVE after the failed RUN retried the DEL.
    let dels = calls(bin.path())
        .iter()
        .filter(|c| c.starts_with("DEL"))
        .count();
    assert!(dels >= 3, "{:?}", calls(bin.path()));

    std::fs::remove_file(bin.path().join("del-fails")).unwrap();
    node.restart_runtime().await.unwrap();
    node.wait_until("the next Synchronize finished the give-back", || {
        !has_attachment(&recorded_nic(&node, &claim.uid))
    })
    .await
    .unwrap();
    unprepare_and_check_clean(&node, claim, leases.path()).await;
}

/// Issue 11: DEL fails at STOP: the hook fails with the plugin's message, the cache entry
/// and the lease stay (the spec stops DEL at the first failure, and the entry is what a
/// retry runs DEL with), a Warning Event says so, REMOVE retries; once DEL works, the
/// kubelet's unprepare finishes the job through the pod netns the driver kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_del_failing_at_stop_keeps_its_cache_entry_and_is_retried() {
    let (bin, leases) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pod_uid = uid(9);
    let (mut node, claim) =
        node_with_controlled_claim(bin.path(), leases.path(), "delfail", &pod_uid).await;
    let mut pod = node.run_pod("delfail", &pod_uid).await.unwrap().unwrap();
    let link = net1(&node, &pod).expect("no net1 in the pod");
    assert!(has_addr(&link, &format!("{LEASED}/24")), "{link}");
    assert_eq!(cache_files(&node).len(), 1);

    std::fs::write(bin.path().join("del-fails"), "").unwrap();
    let stop = node.stop_pod(&mut pod).await.unwrap().unwrap_err();
    assert!(stop.contains("claim default/delfail"), "{stop}");
    assert!(stop.contains("ctl refuses DEL"), "{stop}");
    assert_eq!(
        cache_files(&node).len(),
        1,
        "the cache entry went with a failed DEL"
    );
    assert!(
        lease_file(leases.path()).exists(),
        "DEL went on past its failure"
    );
    assert_eq!(
        recorded_nic(&node, &claim.uid)["attachment"]["phase"],
        "detachFailed"
    );
    let (kind, note) = node
        .wait_for_claim_event("delfail", "DetachFailed")
        .await
        .unwrap();
    assert_eq!(kind, "Warning");
    assert!(note.contains("ctl refuses DEL"), "{note}");
    let remove = node.remove_pod(pod).await.unwrap().unwrap_err();
    assert!(remove.contains("ctl refuses DEL"), "{remove}");
    assert_eq!(cache_files(&node).len(), 1);

    std::fs::remove_file(bin.path().join("del-fails")).unwrap();
    unprepare_and_check_clean(&node, claim, leases.path()).await;
}

/// Issue 11: the chain's last plugin prints something that is no CNI result: the sandbox
/// fails naming the plugin and what is wrong, DEL releases what ADD took, and the
/// kubelet's next sandbox gets the network once the plugin behaves.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_cni_result_fails_the_sandbox_and_releases_what_add_took() {
    let (bin, leases) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pod_uid = uid(10);
    let (mut node, claim) =
        node_with_controlled_claim(bin.path(), leases.path(), "garbage", &pod_uid).await;
    std::fs::write(bin.path().join("add-garbage"), "").unwrap();
    let error = node
        .run_pod("garbage", &pod_uid)
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.contains("claim default/garbage"), "{error}");
    assert!(error.contains("ctl"), "{error}");
    assert!(error.contains("not JSON"), "{error}");
    assert!(!lease_file(leases.path()).exists(), "the lease leaked");
    assert_eq!(cache_files(&node), Vec::<String>::new());
    let nic = recorded_nic(&node, &claim.uid);
    assert!(!has_attachment(&nic), "{nic}");
    assert_eq!(nic["failure"]["reason"], "AttachFailed", "{nic}");

    std::fs::remove_file(bin.path().join("add-garbage")).unwrap();
    let retry = PodRun {
        attempt: 1,
        ..PodRun::new("garbage", &pod_uid)
    };
    let pod = node
        .run_pods_at_once(&[retry])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let link = net1(&node, &pod).expect("no net1 in the retried sandbox");
    assert!(has_addr(&link, &format!("{LEASED}/24")), "{link}");
    node.delete_pod(pod).await.unwrap();
    unprepare_and_check_clean(&node, claim, leases.path()).await;
}

/// A read-only bind mount of a directory onto itself, undone on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn mount(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.display().to_string();
        netclaim_test::netns::run("mount", &["--bind", &path, &path]).unwrap();
        let guard = Self(dir.to_owned());
        netclaim_test::netns::run("mount", &["-o", "remount,bind,ro", &path]).unwrap();
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let path = self.0.display().to_string();
        if let Err(error) = netclaim_test::netns::run("umount", &[&path]) {
            eprintln!("unmounting {path}: {error:#}");
        }
    }
}

/// Issue 11: ADD works but its result cannot be cached (the cache directory is read-only,
/// EROFS): without an entry a later DEL could not run with what ADD used, so the ADD is
/// undone (the lease released) and the sandbox fails naming the cache file; with the
/// disk writable again the kubelet's next sandbox gets the network.
#[tokio::test(flavor = "multi_thread")]
async fn a_cache_write_failure_undoes_the_add_and_the_user_is_told() {
    let leases = tempfile::tempdir().unwrap();
    let pod_uid = uid(11);
    let (mut node, claim) =
        node_with_prepared_claim(&[], leased_claim("nocache", leases.path()), "nc", &pod_uid).await;
    let cache = node.state_dir().join("cni-cache");
    let read_only = ReadOnly::mount(&cache);
    let error = node.run_pod("nc", &pod_uid).await.unwrap().unwrap_err();
    assert!(error.contains("claim default/nocache"), "{error}");
    assert!(error.contains("Read-only file system"), "{error}");
    assert!(error.contains(&cache.display().to_string()), "{error}");
    assert!(!lease_file(leases.path()).exists(), "the lease leaked");
    assert!(!has_attachment(&recorded_nic(&node, &claim.uid)));
    drop(read_only);

    let retry = PodRun {
        attempt: 1,
        ..PodRun::new("nc", &pod_uid)
    };
    let pod = node
        .run_pods_at_once(&[retry])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert!(lease_file(leases.path()).exists());
    assert_eq!(cache_files(&node).len(), 1);
    assert!(net1(&node, &pod).is_some());
    node.delete_pod(pod).await.unwrap();
    unprepare_and_check_clean(&node, claim, leases.path()).await;
}
