//! CDI end to end on a real containerd (1.7 or 2.x, `NETCLAIM_CONTAINERD_MAJOR`; `hack/test.sh`
//! runs this file on both): the `cdi_device_ids` netclaim's prepare returns, passed to CRI
//! `CreateContainer` as the kubelet passes them, make containerd put the claimed NIC's RDMA
//! character devices and the claim's device metadata (KEP-5304) into the container.
//!
//! What is real: containerd with CDI on (reading only the node's CDI directory), runc, the
//! `netclaim` binary and its files, the container (started: its `/dev` and mounts are
//! looked at through `/proc/<pid>/root`). What is not: the RDMA hardware. The node's `eth1`
//! (a veth) is given the sysfs facts of a Mellanox PF with RDMA device `mlx5_0` by a fixture
//! tree the driver reads as its `--sysfs-root` (the char devices' numbers are made up;
//! runc creates nodes with them in the container, nothing opens them). No test machine has
//! `ib_core`, so exclusive RDMA netns mode is only exercised up to the kernel's answer: the
//! attach fails with "no RDMA netlink" and leaves the NIC on the host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use netclaim_test::containerd::{PAUSE_IMAGE, PodSpec};
use netclaim_test::node::checks::{config, nic, pod_link};
use netclaim_test::node::{NodeOptions, RuntimeKind, TestNode};
use serde_json::{Value, json};

const PCI: &str = "devices/pci0000:00/0000:00:02.0/0000:03:00.0";
const CONTAINER_METADATA: &str = "/var/run/kubernetes.io/dra-device-attributes/resourceclaims";

fn uid(n: u32) -> String {
    format!(
        "00000000-0000-4000-a000-{:012x}",
        u64::from(n) + u64::from(std::process::id()) * 1000
    )
}

fn write(path: PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn link(target: &str, at: PathBuf) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, at).unwrap();
}

/// A sysfs tree in which `if_name` is a Mellanox PF (`0000:03:00.0`) with RDMA device
/// `mlx5_0`: `uverbs0` (231:192), `umad0` (231:0), `issm0` (231:64), and the node's
/// `rdma_cm` (10:58); ib_core in shared netns mode.
fn rdma_sysfs(root: &Path, if_name: &str) {
    let pci = root.join(PCI);
    write(pci.join("vendor"), "0x15b3\n");
    write(pci.join("device"), "0x1017\n");
    write(pci.join("numa_node"), "0\n");
    write(pci.join("infiniband/mlx5_0/node_type"), "1: CA\n");
    std::fs::create_dir_all(pci.join("net").join(if_name)).unwrap();
    link(
        "../../../0000:03:00.0",
        pci.join("net").join(if_name).join("device"),
    );
    link(
        &format!("../../{PCI}/net/{if_name}"),
        root.join("class/net").join(if_name),
    );
    for (class, name, dev) in [
        ("infiniband_verbs", "uverbs0", "231:192"),
        ("infiniband_mad", "umad0", "231:0"),
        ("infiniband_mad", "issm0", "231:64"),
    ] {
        write(pci.join(class).join(name).join("ibdev"), "mlx5_0\n");
        write(pci.join(class).join(name).join("dev"), &format!("{dev}\n"));
        link(
            &format!("../../{PCI}/{class}/{name}"),
            root.join("class").join(class).join(name),
        );
    }
    write(root.join("class/misc/rdma_cm/dev"), "10:58\n");
    set_netns_mode(root, "Y");
}

fn set_netns_mode(root: &Path, mode: &str) {
    write(
        root.join("module/ib_core/parameters/netns_mode"),
        &format!("{mode}\n"),
    );
}

fn spec_file(node: &TestNode, claim_uid: &str) -> PathBuf {
    node.cdi_spec_dir()
        .join(format!("netclaim.dev-net_{claim_uid}.json"))
}

fn metadata_dir(node: &TestNode, claim_uid: &str) -> PathBuf {
    node.plugins_dir()
        .join("netclaim.dev/dra-device-metadata")
        .join(claim_uid)
}

/// The entry of `list` whose `key` is `value`.
fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|item| item[key] == value)
}

#[tokio::test(flavor = "multi_thread")]
async fn rdma_devices_and_device_metadata_reach_containers_through_cdi() {
    let sysfs = tempfile::tempdir().unwrap();
    rdma_sysfs(sysfs.path(), "eth1");
    let mut node = TestNode::start(NodeOptions {
        runtime: RuntimeKind::Containerd,
        nics: 2,
        sysfs_root: Some(sysfs.path().to_path_buf()),
        ..NodeOptions::default()
    })
    .await
    .unwrap_or_else(|error| panic!("{error:#}"));

    // 1. Prepare returns the CDI id; the spec is in containerd's CDI directory.
    let pod_uid = uid(1);
    let cfg = config(json!({"name": "net1", "addresses": ["192.0.2.10/24"]}));
    let claim = node
        .allocate(&[nic("rdma-nic", "eth1", Some(cfg))], "trainer", &pod_uid)
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    let outcome = &prepared[&claim.uid];
    assert_eq!(outcome.error, "", "prepare failed");
    let device = &outcome.devices[0];
    let cdi_ids = device.cdi_device_ids.clone();
    assert_eq!(
        cdi_ids,
        [format!(
            "netclaim.dev/net={}-{}",
            claim.uid, device.device_name
        )]
    );
    assert!(spec_file(&node, &claim.uid).is_file());

    // 2. The pod runs: RUN attaches eth1 as net1 and rewrites the metadata before it
    //    answers containerd.
    let pod = node.run_pod("trainer", &pod_uid).await.unwrap().unwrap();
    let mac = pod_link(&node, &pod, "net1")["address"]
        .as_str()
        .unwrap()
        .to_owned();

    // 3. A container created with the ids, as the kubelet creates it: containerd's OCI
    //    spec has the RDMA device nodes (allowed in its device cgroup) and the metadata
    //    bind mount.
    let containerd = node.containerd().unwrap();
    let mut cri = containerd.cri().await.unwrap();
    let mut spec = PodSpec::new("trainer");
    spec.uid = pod_uid.clone();
    let container = cri
        .create_container(&pod.sandbox_id, &spec, "app", PAUSE_IMAGE, &cdi_ids)
        .await
        .unwrap();
    let (_, info) = cri.container_status(&container).await.unwrap();
    let runtime_spec = &info["runtimeSpec"];
    let devices = &runtime_spec["linux"]["devices"];
    for (path, major, minor, mode) in [
        ("/dev/infiniband/uverbs0", 231, 192, 0o666),
        ("/dev/infiniband/umad0", 231, 0, 0o600),
        ("/dev/infiniband/rdma_cm", 10, 58, 0o666),
    ] {
        let node_spec = find(devices, "path", path)
            .unwrap_or_else(|| panic!("no {path} in the OCI spec: {devices}"));
        assert_eq!(node_spec["type"], "c", "{node_spec}");
        assert_eq!(node_spec["major"], major, "{node_spec}");
        assert_eq!(node_spec["minor"], minor, "{node_spec}");
        assert_eq!(node_spec["fileMode"], mode, "{node_spec}");
        let allowed = runtime_spec["linux"]["resources"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| {
                rule["allow"] == true
                    && rule["type"] == "c"
                    && rule["major"] == major
                    && rule["minor"] == minor
                    && rule["access"] == "rwm"
            });
        assert!(allowed, "{path} is not allowed in the device cgroup");
    }
    assert!(
        find(devices, "path", "/dev/infiniband/issm0").is_none(),
        "issm0 (subnet manager) must not reach pods: {devices}"
    );
    let container_path = format!("{CONTAINER_METADATA}/rdma-nic/nic/netclaim.dev-metadata.json");
    let mount = find(&runtime_spec["mounts"], "destination", &container_path)
        .unwrap_or_else(|| panic!("no metadata mount: {}", runtime_spec["mounts"]));
    let host_file = metadata_dir(&node, &claim.uid).join("nic/metadata.json");
    assert_eq!(mount["source"], host_file.display().to_string());
    let options: Vec<&str> = mount["options"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        options.contains(&"ro") && options.contains(&"bind"),
        "{mount}"
    );

    // 4. Started, the container really has them: runc made the nodes in its /dev, and the
    //    file it reads carries the network data of the attach.
    cri.start_container(&container).await.unwrap();
    let (status, info) = cri.container_status(&container).await.unwrap();
    assert_eq!(status.state, 1, "the container is not running: {status:?}");
    let pid = info["pid"].as_u64().unwrap();
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let verbs = std::fs::metadata(root.join("dev/infiniband/uverbs0")).unwrap();
    assert!(verbs.file_type().is_char_device());
    assert_eq!(
        (
            nix::sys::stat::major(verbs.rdev()),
            nix::sys::stat::minor(verbs.rdev())
        ),
        (231, 192)
    );
    let inside = std::fs::read(root.join(container_path.trim_start_matches('/'))).unwrap();
    let metadata = netclaim::device_metadata::first_object(&inside).unwrap();
    assert_eq!(metadata["apiVersion"], "metadata.resource.k8s.io/v1alpha1");
    assert_eq!(metadata["kind"], "DeviceMetadata");
    assert_eq!(metadata["metadata"]["name"], "rdma-nic");
    assert_eq!(metadata["metadata"]["uid"], claim.uid.as_str());
    assert_eq!(
        metadata["metadata"]["generation"], 2,
        "written at prepare, rewritten once at attach: {metadata}"
    );
    let entry = &metadata["requests"][0];
    assert_eq!(entry["name"], "nic");
    let device_metadata = &entry["devices"][0];
    assert_eq!(device_metadata["driver"], "netclaim.dev");
    assert_eq!(device_metadata["name"], device.device_name.as_str());
    assert_eq!(
        device_metadata["attributes"]["rdmaDevice"]["string"],
        "mlx5_0"
    );
    assert_eq!(
        device_metadata["networkData"],
        json!({"interfaceName": "net1", "ips": ["192.0.2.10/24"], "hardwareAddress": mac})
    );
    // The mount is read-only.
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join(container_path.trim_start_matches('/')));
    assert_eq!(
        opened.unwrap_err().raw_os_error(),
        Some(nix::libc::EROFS),
        "the metadata mount must be read-only"
    );

    // 5. Torn down as the kubelet does it: after unprepare, the spec and the metadata are
    //    gone.
    cri.stop_container(&container, 5).await.unwrap();
    cri.remove_container(&container).await.unwrap();
    node.delete_pod(pod).await.unwrap();
    let unprepared = node.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(unprepared[&claim.uid], "");
    assert!(!spec_file(&node, &claim.uid).exists());
    assert!(!metadata_dir(&node, &claim.uid).exists());

    // 6. Exclusive RDMA netns mode: the RDMA device must move with the NIC. Without RDMA
    //    netlink in this kernel the move fails, so the sandbox fails with that reason and
    //    the NIC stays on the host.
    set_netns_mode(sysfs.path(), "N");
    let pod_uid = uid(2);
    let claim = node
        .allocate(&[nic("exclusive-nic", "eth1", None)], "exclusive", &pod_uid)
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(prepared[&claim.uid].error, "");
    let stored = node.prepared_claims().unwrap();
    assert_eq!(
        stored[&claim.uid]["nics"][0]["rdma"]["netnsExclusive"], true,
        "{stored}"
    );
    let refused = node
        .run_pod("exclusive", &pod_uid)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        refused.contains("moving RDMA device mlx5_0 into the pod's netns")
            && refused.contains("the kernel has no RDMA netlink"),
        "{refused}"
    );
    assert!(
        node.node_link_names()
            .unwrap()
            .contains(&"eth1".to_string())
    );
    let unprepared = node.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(unprepared[&claim.uid], "");
    set_netns_mode(sysfs.path(), "Y");

    // 7. A restart removes the files of claims the checkpoint does not hold (as a crash
    //    between writing them and recording the claim leaves them), keeps the others', and
    //    leaves other vendors' specs alone.
    let kept = node
        .allocate(&[nic("kept-nic", "eth2", None)], "kept", &uid(3))
        .await
        .unwrap();
    let prepared = node.prepare(std::slice::from_ref(&kept)).await.unwrap();
    assert_eq!(prepared[&kept.uid].error, "");
    node.kill_driver().unwrap();
    let stray = uid(4);
    std::fs::write(
        spec_file(&node, &stray),
        serde_json::to_vec(&json!({"cdiVersion": "0.5.0", "kind": "netclaim.dev/net",
            "devices": [{"name": format!("{stray}-eth9"), "containerEdits": {
                "mounts": [{"hostPath": "/nonexistent", "containerPath": "/x"}]}}]}))
        .unwrap(),
    )
    .unwrap();
    write(metadata_dir(&node, &stray).join("nic/metadata.json"), "{}");
    let foreign = node.cdi_spec_dir().join("vendor.example-gpu.json");
    std::fs::write(&foreign, "{}").unwrap();
    node.start_driver().await.unwrap();
    assert!(!spec_file(&node, &stray).exists());
    assert!(!metadata_dir(&node, &stray).exists());
    assert!(spec_file(&node, &kept.uid).is_file());
    assert!(
        metadata_dir(&node, &kept.uid)
            .join("nic/metadata.json")
            .is_file()
    );
    assert!(foreign.is_file());
    let unprepared = node.unprepare(std::slice::from_ref(&kept)).await.unwrap();
    assert_eq!(unprepared[&kept.uid], "");
}
