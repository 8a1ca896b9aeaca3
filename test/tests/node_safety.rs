//! Node safety (issues 10 and 11) through the real `netclaim` binary with the NRI runtime
//! stand-in: what a pod without claims costs, what an API outage leaves behind, and what
//! happens when the checkpoint cannot be written (a full disk, a read-only one) in
//! prepare, in the hooks and in unprepare. Each test ends with the node clean, and checks
//! that the user was told what went wrong where it went wrong.
//!
//! The disk failures are real: the driver's state directory is a small tmpfs of the test's
//! own ([`NodeOptions::state_tmpfs_bytes`]), filled up for ENOSPC; for EROFS the
//! checkpoint's directory is bind-mounted read-only onto itself.
//!
//! The API outage test really lasts three minutes (the outage is the scenario, not a
//! wait for something); the file's other tests run next to it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use kubeletplugin::ClaimRef;
use netclaim::network_status::NETWORK_STATUS_ANNOTATION;
use netclaim_test::netns::run;
use netclaim_test::node::checks::{
    cni_nic, config, has_addr, host_view, network_status_interfaces, nic, pod_interfaces, pod_link,
};
use netclaim_test::node::{NicClaim, NodeOptions, PodRun, TestNode, TestPod};
use serde_json::{Value, json};

fn uid(n: u32) -> String {
    format!(
        "00000000-0000-4000-a000-{:012x}",
        u64::from(n) + u64::from(std::process::id()) * 1000
    )
}

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

async fn unprepared_cleanly(node: &TestNode, claims: &[ClaimRef]) {
    let outcome = node.unprepare(claims).await.unwrap();
    assert!(outcome.values().all(String::is_empty), "{outcome:?}");
}

fn recorded_nic(node: &TestNode, uid: &str) -> Value {
    node.prepared_claims().unwrap()[uid]["nics"][0].clone()
}

fn has_attachment(nic: &Value) -> bool {
    nic.get("attachment").is_some_and(|a| !a.is_null())
}

/// Every file under `dir` (recursively) with its inode, size and modification time, and
/// every directory with its modification time: a write of any kind (the checkpoint
/// replaces files by rename, which changes the directory and the inode) shows up here.
fn files_under(dir: &Path) -> BTreeMap<String, (u64, u64, i64, i64)> {
    let mut seen = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let meta = std::fs::metadata(&current).unwrap();
        seen.insert(
            current.display().to_string(),
            (meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()),
        );
        if meta.is_dir() {
            for entry in std::fs::read_dir(&current).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    seen
}

/// A CNI 1.0.0 test plugin `gate` whose ADD says it started (`<dir>/started`) and then
/// waits (at most 20 s) until `<dir>/release` exists: a slow plugin the test controls.
/// Chained after another plugin it passes the previous result on (cut out of its compact
/// stdin, where netclaim sorts the keys: `"prevResult"` then `"type"`).
fn write_gate_plugin(dir: &Path) {
    let d = dir.display();
    let script = format!(
        r#"#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}}' ;;
ADD) input=$(cat); touch {d}/started
  n=0
  while [ ! -e {d}/release ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done
  case "$input" in
  *'"prevResult"'*)
    printf '%s' "$input" | sed -e 's/^.*"prevResult"://' -e 's/,"type":"gate"}}$/}}/' -e 's/}}$//' ;;
  *) echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"'$CNI_IFNAME'","sandbox":"'$CNI_NETNS'"}}],"ips":[]}}' ;;
  esac ;;
*) cat >/dev/null ;;
esac
"#
    );
    netclaim_test::netns::write_executable(dir, "gate", &script).unwrap();
}

/// Issue 10: a pod without claims costs nothing. While another pod's device is locked for
/// a long time (its late attach at Synchronize runs a CNI plugin that waits for the test),
/// a claimless pod's RUN, STOP and REMOVE are answered at once and write no file (the
/// checkpoint and the CNI cache are exactly as before), and a pod whose NIC is another
/// device gets it: no hook waits on another pod's device.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_without_claims_costs_nothing_while_another_pods_device_is_busy() {
    let bin = tempfile::tempdir().unwrap();
    write_gate_plugin(bin.path());
    let bin_dir = bin.path().display().to_string();
    let mut node = TestNode::start(NodeOptions {
        extra_args: [
            "--cni-bin-dir",
            &bin_dir,
            "--cni-allowed-plugins",
            "gate",
            // Room for a plugin that takes its time, in the background reconcile.
            "--nri-request-timeout-seconds",
            "30",
            "--cni-timeout-seconds",
            "20",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let slow_uid = uid(1);
    let gated = cni_nic(
        "gated",
        "eth1",
        json!({"cniVersion": "1.0.0", "name": "gatenet", "plugins": [{"type": "gate"}]}),
    );
    let slow_claim = prepared(&node, gated, "slow", &slow_uid).await;
    let other_uid = uid(2);
    let cfg = config(json!({"name": "net2", "addresses": ["198.51.100.20/24"]}));
    let other_claim = prepared(&node, nic("other", "eth2", Some(cfg)), "other", &other_uid).await;

    // The slow pod runs while the driver is away; the next Synchronize attaches it late,
    // in the background, holding its device's lock while the plugin waits.
    node.stop_driver().unwrap();
    let slow = node.run_pod("slow", &slow_uid).await.unwrap().unwrap();
    node.start_driver().await.unwrap();
    node.wait_until("the late attach's CNI ADD is running", || {
        bin.path().join("started").exists()
    })
    .await
    .unwrap();

    let state = node.state_dir();
    let before = files_under(&state);
    // The first driver's connection was dropped when it stopped; no drop after that.
    let drops_before = node.runtime_stand_in().unwrap().drops().len();
    let plain = node.run_pod("plain", &uid(3)).await.unwrap().unwrap();
    node.delete_pod(plain).await.unwrap();
    let drops = node.runtime_stand_in().unwrap().drops();
    assert_eq!(
        drops.len(),
        drops_before,
        "a claimless hook was not answered: {drops:?}"
    );
    assert_eq!(
        files_under(&state),
        before,
        "a claimless pod's hooks wrote to the state directory"
    );

    // Another device: its RUN does not wait for the busy one either.
    let other = node.run_pod("other", &other_uid).await.unwrap().unwrap();
    assert!(has_addr(
        &pod_link(&node, &other, "net2"),
        "198.51.100.20/24"
    ));
    assert_eq!(node.runtime_stand_in().unwrap().drops().len(), drops_before);
    assert!(
        !has_attachment(&recorded_nic(&node, &slow_claim.uid))
            || recorded_nic(&node, &slow_claim.uid)["attachment"]["phase"] == "attaching",
        "the slow attach finished before it was released"
    );

    std::fs::write(bin.path().join("release"), "").unwrap();
    let condition = node
        .wait_for_ready_reason("gated", "AttachedLate")
        .await
        .unwrap();
    assert_eq!(condition["status"], "True", "{condition}");
    node.delete_pod(slow).await.unwrap();
    node.delete_pod(other).await.unwrap();
    unprepared_cleanly(&node, &[slow_claim, other_claim]).await;
}

/// The netclaim entries of pod `name`'s network-status (by interface), `None` when the
/// pod has no annotation.
async fn netclaim_network_status(
    node: &TestNode,
    name: &str,
    ours: &impl Fn(&str) -> bool,
) -> BTreeMap<String, Value> {
    use k8s_openapi::api::core::v1::Pod;
    let pods: kube::Api<Pod> = kube::Api::namespaced(node.api.client(), "default");
    let pod = pods.get(name).await.unwrap();
    pod.metadata
        .annotations
        .and_then(|mut a| a.remove(NETWORK_STATUS_ANNOTATION))
        .map(|value| network_status_interfaces(&value, ours))
        .unwrap_or_default()
}

/// netclaim's `status.devices` entries of claim `name`, as the API holds them.
async fn netclaim_devices(node: &TestNode, name: &str) -> Vec<Value> {
    let claim = node.claim(name).await.unwrap();
    let status = serde_json::to_value(claim.status).unwrap();
    status["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|device| device["driver"] == "netclaim.dev")
        .cloned()
        .collect()
}

/// What claim status says of an attached device, in the shape of [`pod_interfaces`].
fn status_view(device: &Value) -> Value {
    let data = &device["networkData"];
    let mut ips: Vec<String> = data["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.as_str())
        .map(|ip| ip.split('/').next().unwrap_or(ip).to_owned())
        .collect();
    ips.sort();
    json!({"ips": ips, "mac": data["hardwareAddress"].as_str().unwrap_or("").to_lowercase()})
}

/// Issue 10: the API server answers nothing but 503 for three minutes, while one pod gets
/// its NIC and another gives its NIC back. Afterwards, with nothing else happening, the
/// claims' status and the pods' network-status say what the node has: the attached NIC
/// exactly as in its pod (Ready, addresses, MAC), the given-back one gone from both.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_three_minute_api_outage_status_and_network_status_match_the_node() {
    let mut node = TestNode::start(NodeOptions::default()).await.unwrap();
    let coming_uid = node.create_pod_object("coming", json!({})).await.unwrap();
    let going_uid = node.create_pod_object("going", json!({})).await.unwrap();
    let coming_cfg =
        config(json!({"name": "net1", "addresses": ["192.0.2.31/24", "2001:db8::31/64"]}));
    let going_cfg = config(json!({"name": "net2", "addresses": ["198.51.100.32/24"]}));
    let coming_claim = prepared(
        &node,
        nic("coming", "eth1", Some(coming_cfg)),
        "coming",
        &coming_uid,
    )
    .await;
    let going_claim = prepared(
        &node,
        nic("going", "eth2", Some(going_cfg)),
        "going",
        &going_uid,
    )
    .await;
    let ours = |network: &str| network == "default/coming" || network == "default/going";
    let going = node.run_pod("going", &going_uid).await.unwrap().unwrap();
    node.wait_for_ready_reason("going", "NetworkReady")
        .await
        .unwrap();
    node.wait_for_pod_annotation("going", NETWORK_STATUS_ANNOTATION, "net2 is listed", |v| {
        v.is_some_and(|v| v.contains("\"net2\""))
    })
    .await
    .unwrap();

    let faults = node.api.faults();
    faults.fail_next("*", "*", usize::MAX, 503);
    let outage = Instant::now();
    let requests_before = faults.request_count("*", "*");
    let coming = node.run_pod("coming", &coming_uid).await.unwrap().unwrap();
    node.delete_pod(going).await.unwrap();
    while outage.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let pid = node.driver_pid().unwrap();
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "the driver died during the outage; its log:\n{}",
            node.driver_log()
        );
    }
    assert!(
        faults.request_count("*", "*") > requests_before,
        "the driver did not try the API during the outage"
    );
    faults.clear_failures();

    let in_pod = pod_interfaces(&node, &coming);
    // The writers back off to 30 s between attempts during the outage, and a write in
    // flight when it ends may take its 15 s limit: 90 s covers both with room for a
    // loaded CI machine.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let coming_status = netclaim_devices(&node, "coming").await;
        let going_status = netclaim_devices(&node, "going").await;
        let coming_listed = netclaim_network_status(&node, "coming", &ours).await;
        let going_listed = netclaim_network_status(&node, "going", &ours).await;
        let coming_ready = coming_status.len() == 1
            && coming_status[0]["conditions"][0]["reason"] == "NetworkReady"
            && status_view(&coming_status[0]) == in_pod["net1"];
        if coming_ready
            && going_status.is_empty()
            && coming_listed == in_pod
            && going_listed.is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "90 s after the outage the API does not match the node: claim coming \
             {coming_status:?}, claim going {going_status:?}, network-status of coming \
             {coming_listed:?} (the pod has {in_pod:?}), of going {going_listed:?}; \
             driver log:\n{}",
            node.driver_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.delete_pod(coming).await.unwrap();
    unprepared_cleanly(&node, &[coming_claim, going_claim]).await;
}

/// A node whose state directory is a 1 MiB tmpfs.
async fn node_on_small_disk() -> TestNode {
    TestNode::start(NodeOptions {
        state_tmpfs_bytes: Some(1024 * 1024),
        ..NodeOptions::default()
    })
    .await
    .unwrap()
}

/// Fills the node's state tmpfs up (ENOSPC for the next write that needs a page).
fn fill_disk(node: &TestNode) {
    let mut filler = std::fs::File::create(node.state_dir().join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match filler.write_all(&chunk) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(error) => panic!("filling the state tmpfs: {error}"),
        }
    }
    // Whatever a partial write left in the page cache must be accounted now.
    let _ = filler.sync_all();
}

fn free_disk(node: &TestNode) {
    std::fs::remove_file(node.state_dir().join("filler")).unwrap();
}

fn set_read_only(node: &TestNode, read_only: bool) {
    checkpoint_read_only(&node.state_dir(), read_only);
}

/// Makes the checkpoint's directory (`<state>/claims`) read-only (EROFS for every write
/// of a record) or writable again. A read-only bind mount of the directory onto itself:
/// the whole state filesystem cannot be remounted read-only while the driver holds its
/// `active.lock` open for writing.
fn checkpoint_read_only(state: &Path, read_only: bool) {
    let claims = state.join("claims").display().to_string();
    if read_only {
        run("mount", &["--bind", &claims, &claims]).unwrap();
        run("mount", &["-o", "remount,bind,ro", &claims]).unwrap();
    } else {
        // Lazily: the driver may have the directory open for a moment.
        run("umount", &["-l", &claims]).unwrap();
    }
}

/// Issue 11: prepare on a full disk and unprepare on a read-only one. Each fails the
/// claim with the filesystem's error (the user sees it in the kubelet's Event), leaves the
/// checkpoint as it was (no half-prepared claim, no forgotten one), and the kubelet's
/// retry succeeds once the disk is back.
#[tokio::test(flavor = "multi_thread")]
async fn prepare_and_unprepare_that_cannot_write_the_checkpoint_fail_per_claim_and_retry() {
    let node = node_on_small_disk().await;
    let claim = node
        .allocate(&[nic("nospace", "eth1", None)], "nospace", &uid(10))
        .await
        .unwrap();
    fill_disk(&node);
    let outcome = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    let error = &outcome[&claim.uid].error;
    assert!(
        error.starts_with("claim default/nospace: checkpoint: "),
        "{error}"
    );
    assert!(error.contains("No space left on device"), "{error}");
    assert!(outcome[&claim.uid].devices.is_empty());
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
    free_disk(&node);
    let outcome = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(outcome[&claim.uid].error, "");
    assert_eq!(outcome[&claim.uid].devices.len(), 1);

    set_read_only(&node, true);
    let outcome = node.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    let error = &outcome[&claim.uid];
    assert!(error.starts_with("claim default/nospace: "), "{error}");
    assert!(error.contains("Read-only file system"), "{error}");
    let recorded = node.prepared_claims().unwrap();
    assert!(
        recorded.get(&claim.uid).is_some(),
        "the claim was forgotten: {recorded}"
    );
    set_read_only(&node, false);
    unprepared_cleanly(&node, &[claim]).await;
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

/// Issue 11: a RUN whose first record (`Attaching`, written before anything
/// moves) cannot be written fails the sandbox with the filesystem's error and leaves the
/// NIC exactly as it was; the kubelet's next sandbox gets it once the disk is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_cannot_record_its_attach_fails_before_anything_moves() {
    let mut node = node_on_small_disk().await;
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let before = host_view(&node.node_link("eth1").unwrap());
    let pod_uid = uid(11);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = prepared(&node, nic("rofs", "eth1", Some(cfg)), "rofs", &pod_uid).await;

    set_read_only(&node, true);
    let error = node.run_pod("rofs", &pod_uid).await.unwrap().unwrap_err();
    assert!(error.contains("claim default/rofs"), "{error}");
    assert!(error.contains("recording the attachment"), "{error}");
    assert!(error.contains("Read-only file system"), "{error}");
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    assert!(!has_attachment(&recorded_nic(&node, &claim.uid)));
    set_read_only(&node, false);

    let retry = PodRun {
        attempt: 1,
        ..PodRun::new("rofs", &pod_uid)
    };
    let pod = node
        .run_pods_at_once(&[retry])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert!(has_addr(&pod_link(&node, &pod, "net1"), "192.0.2.10/24"));
    node.delete_pod(pod).await.unwrap();
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    unprepared_cleanly(&node, &[claim]).await;
}

/// A node on a small disk whose `eth1` (up; its host view returned) is claimed as `net1`
/// by claim `full` and attached to a running pod with uid `uid(n)`.
async fn pod_with_eth1_on_a_small_disk(n: u32) -> (TestNode, Value, ClaimRef, TestPod) {
    let mut node = node_on_small_disk().await;
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let before = host_view(&node.node_link("eth1").unwrap());
    let pod_uid = uid(n);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = prepared(&node, nic("full", "eth1", Some(cfg)), "full", &pod_uid).await;
    let pod = node.run_pod("full", &pod_uid).await.unwrap().unwrap();
    (node, before, claim, pod)
}

/// Issue 11: the state directory cannot be written when the pod ends (remounted read-only).
/// STOP and REMOVE cannot record the give-back, so they fail saying so, and the NIC is not
/// lost (today it stays in the pod's netns, which the driver keeps alive after the runtime
/// removed it); unprepare fails the same way and keeps the claim; once the directory is
/// writable again, the kubelet's retry gives the NIC back exactly and forgets the claim.
#[tokio::test(flavor = "multi_thread")]
async fn a_give_back_that_cannot_be_recorded_keeps_the_nic_safe_until_the_retry() {
    let (mut node, before, claim, mut pod) = pod_with_eth1_on_a_small_disk(12).await;

    set_read_only(&node, true);
    let stop = node.stop_pod(&mut pod).await.unwrap().unwrap_err();
    assert!(stop.contains("claim default/full"), "{stop}");
    assert!(stop.contains("recording the give-back"), "{stop}");
    assert!(stop.contains("Read-only file system"), "{stop}");
    let remove = node.remove_pod(pod).await.unwrap().unwrap_err();
    assert!(remove.contains("Read-only file system"), "{remove}");
    // Wherever the NIC is (in the pod's netns, which the driver keeps, or back on the
    // node), it is not lost: its wire is still there.
    assert!(
        node.lan().has_link("peer1"),
        "eth1 died with the pod's netns"
    );
    let outcome = node.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    let error = &outcome[&claim.uid];
    assert!(error.contains("could not be detached"), "{error}");
    assert!(error.contains("Read-only file system"), "{error}");
    assert!(has_attachment(&recorded_nic(&node, &claim.uid)));

    set_read_only(&node, false);
    unprepared_cleanly(&node, &[claim]).await;
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

/// A full disk does not stop a give-back: the records of STOP overwrite slots that the
/// claim's files already hold (written at prepare and RUN), so they need no new blocks,
/// and the NIC goes back exactly. (Before the volatile records were slots, each was a new
/// file, and STOP failed with "No space left on device".)
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_does_not_stop_a_give_back() {
    let (mut node, before, claim, mut pod) = pod_with_eth1_on_a_small_disk(14).await;

    fill_disk(&node);
    node.stop_pod(&mut pod).await.unwrap().unwrap();
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
    assert!(!has_attachment(&recorded_nic(&node, &claim.uid)));
    node.remove_pod(pod).await.unwrap().unwrap();
    free_disk(&node);
    unprepared_cleanly(&node, &[claim]).await;
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
}

/// Issue 11: the checkpoint's disk turns read-only in the middle of a RUN, after the
/// durable `Attaching` record and while the CNI chain runs (macvlan made `net1`, host-local
/// took the lease, the last plugin waits for the test). The CNI cache is on a disk of its
/// own that stays writable, so it is the `Attached` record that fails: the sandbox fails
/// with the filesystem's error, and nothing is forgotten: the record still says the
/// network may be in the pod, and once the disk is writable again the kubelet's
/// unprepare DELs it (the lease is released, the cache entry goes) and the node is clean.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_attached_record_cannot_be_written_fails_and_forgets_nothing() {
    let bin = tempfile::tempdir().unwrap();
    let leases = tempfile::tempdir().unwrap();
    write_gate_plugin(bin.path());
    let bin_dir = bin.path().display().to_string();
    let mut node = TestNode::start(NodeOptions {
        state_tmpfs_bytes: Some(1024 * 1024),
        extra_args: [
            "--cni-bin-dir",
            &bin_dir,
            "--cni-bin-dir",
            "/usr/lib/cni",
            "--cni-allowed-plugins",
            "macvlan,host-local,gate",
            "--nri-request-timeout-seconds",
            "30",
            "--cni-timeout-seconds",
            "20",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    node.ip(&["link", "set", "eth1", "up"]).unwrap();
    let before = host_view(&node.node_link("eth1").unwrap());
    // The CNI cache on a tmpfs of its own, which stays writable.
    let cache = node.state_dir().join("cni-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let _cache_mount = Tmpfs::mount(&cache);
    let lease = leases.path().join("gatenet").join("192.0.2.60");
    let pod_uid = uid(13);
    // The class's network (a claim may not choose host-local's dataDir).
    let gated = cni_nic(
        "rofs-late",
        "eth1",
        json!({"cniVersion": "1.0.0", "name": "gatenet", "plugins": [
            {"type": "macvlan", "mode": "bridge", "ipam": {
                "type": "host-local", "dataDir": leases.path().display().to_string(),
                "ranges": [[{"subnet": "192.0.2.0/24",
                             "rangeStart": "192.0.2.60", "rangeEnd": "192.0.2.60"}]]}},
            {"type": "gate"}
        ]}),
    );
    let claim = prepared(&node, gated, "rofs-late", &pod_uid).await;

    let state = node.state_dir();
    let started = bin.path().join("started");
    let release = bin.path().join("release");
    let disk_fails = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !started.exists() {
            assert!(
                Instant::now() < deadline,
                "the RUN hook's ADD never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        checkpoint_read_only(&state, true);
        std::fs::write(&release, "").unwrap();
    };
    // The runtime sends STOP and REMOVE after the failed RUN (the disk still read-only)
    // and removes the sandbox's netns.
    let (outcome, ()) = tokio::join!(node.run_pod("rofs-late", &pod_uid), disk_fails);
    let error = outcome.unwrap().unwrap_err();
    assert!(error.contains("claim default/rofs-late"), "{error}");
    assert!(error.contains("recording the attachment"), "{error}");
    assert!(error.contains("Read-only file system"), "{error}");
    // Whatever the hooks could not undo is still on record as possibly in the pod.
    let nic = recorded_nic(&node, &claim.uid);
    assert!(has_attachment(&nic), "the attach was forgotten: {nic}");

    set_read_only(&node, false);
    unprepared_cleanly(&node, &[claim]).await;
    assert!(!lease.exists(), "the lease leaked");
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(cached.is_empty(), "CNI cache entries left: {cached:?}");
    assert_eq!(node.prepared_claims().unwrap(), json!({}));
    assert_eq!(host_view(&node.node_link("eth1").unwrap()), before);
}

/// A tmpfs mounted on a directory, unmounted on drop (before the node's own state tmpfs
/// it sits on).
struct Tmpfs(String);

impl Tmpfs {
    fn mount(dir: &Path) -> Self {
        let path = dir.display().to_string();
        let options = ["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", &path];
        run("mount", &options).unwrap();
        Self(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(error) = run("umount", &[&self.0]) {
            eprintln!("unmounting {}: {error:#}", self.0);
        }
    }
}
