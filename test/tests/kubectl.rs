//! The real `kubectl` (Debian sid's 1.36 client, installed by hack/install-deps.sh) against
//! the API server stand-in: what an admin types to see what netclaim published and what it
//! reported on a claim. The slices are written by the kubeletplugin publisher and the
//! claim's status by the driver's own status writer (`netclaim::status`); kubectl does
//! its discovery (aggregated first, then the legacy per-group documents), asks for
//! server-side Tables for `get` and plain objects for `-o yaml`, as against a real API
//! server.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaim, ResourceSlice};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubeletplugin::{DriverResources, Pool, PublisherConfig, ResourceSlicePublisher};
use netclaim::level_writer::{Applied, Apply};
use netclaim::state::{
    AttachPhase, AttachedNetwork, Attachment, LinkSnapshot, NetworkData, PreparedClaim, PreparedNic,
};
use netclaim::status::{ClaimStatusApply, claim_status};
use netclaim_test::apiserver::ApiServer;
use serde::Deserialize;
use serde_json::{Value, json};

const KUBECTL: &str = "/opt/netclaim-deps/kubectl/usr/bin/kubectl";
const NODE: &str = "node-a";
const DRIVER: &str = "netclaim.dev";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    /// `kubectl ARGS`: stdout, or a panic with stderr.
    async fn run(&self, args: &[&str]) -> String {
        assert!(
            Path::new(KUBECTL).is_file(),
            "{KUBECTL} is missing: run hack/install-deps.sh (Debian sid's kubernetes-client 1.36)"
        );
        let mut command = Command::new(KUBECTL);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .current_dir(repo());
        let out = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The rows of a kubectl table, split on runs of spaces.
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn fixture_devices() -> Vec<k8s_openapi::api::resource::v1::Device> {
    let text = std::fs::read_to_string(repo().join("test/fixtures/explain/devices.yaml")).unwrap();
    let slice: ResourceSlice = serde_yaml::from_str(&text).unwrap();
    slice.spec.devices.unwrap()
}

fn attached_nic() -> PreparedNic {
    let mut nic: PreparedNic = serde_json::from_value(json!({
        "request": "nic", "pool": NODE, "device": "pci-0000-03-00-0",
        "hostIfName": "eth1", "config": {"name": "net1"}
    }))
    .unwrap();
    nic.attachment = Some(Attachment {
        sandbox_id: "sandbox-1".into(),
        netns_path: "/run/netns/cni-1".into(),
        host: LinkSnapshot::default(),
        pod_if_name: "net1".into(),
        phase: AttachPhase::Attached,
        pod: None,
        network: Some(AttachedNetwork {
            data: NetworkData {
                interface_name: "net1".into(),
                ips: vec!["192.0.2.10/24".parse().unwrap()],
                hardware_address: Some("02:00:00:00:00:01".into()),
            },
            cni_result: None,
            since: "2026-01-01T00:00:00Z".into(),
            late: false,
        }),
        error: None,
    });
    nic
}

#[tokio::test]
async fn kubectl_shows_published_slices_and_a_claims_status() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl {
        kubeconfig: dir.path().join("kubeconfig"),
        cache: dir.path().join("cache"),
    };
    server.write_kubeconfig(&kubectl.kubeconfig).unwrap();

    // The node and its slices, published as the driver publishes them.
    let node: Node = serde_json::from_value(json!({"metadata": {"name": NODE}})).unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    let publisher = ResourceSlicePublisher::start(
        client.clone(),
        PublisherConfig {
            driver_name: DRIVER.into(),
            node_name: NODE.into(),
            node_uid: None,
        },
    );
    let mut status = publisher.status();
    publisher.update(DriverResources {
        pools: [(NODE.to_owned(), Pool::new(fixture_devices()))].into(),
    });
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.synced_generation > 0 && s.last_error.is_none()),
    )
    .await
    .expect("slices published in time")
    .unwrap();

    let slices = table(&kubectl.run(&["get", "resourceslices"]).await);
    assert_eq!(
        slices[0],
        ["NAME", "NODE", "DRIVER", "POOL", "AGE"],
        "{slices:?}"
    );
    assert_eq!(slices.len(), 2, "{slices:?}");
    assert!(
        slices[1][0].starts_with("node-a-netclaim.dev-"),
        "{slices:?}"
    );
    assert_eq!(slices[1][1..4], [NODE, DRIVER, NODE], "{slices:?}");
    // The devices themselves, as YAML an admin reads.
    let yaml = kubectl.run(&["get", "resourceslices", "-o", "yaml"]).await;
    let list: Value = serde_yaml::from_str(&yaml).unwrap();
    let devices = list["items"][0]["spec"]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3);
    assert_eq!(devices[0]["attributes"]["ifName"]["string"], "eth1");
    // A field selector, as `kubectl get resourceslices --field-selector spec.nodeName=...`.
    let mine = table(
        &kubectl
            .run(&[
                "get",
                "resourceslices",
                "--field-selector",
                "spec.nodeName=node-a",
            ])
            .await,
    );
    assert_eq!(mine.len(), 2, "{mine:?}");

    // A claim: created pending, allocated by "the scheduler", attached by the driver.
    let class: DeviceClass = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("examples/install/deviceclass.yaml")).unwrap(),
    )
    .unwrap();
    Api::<DeviceClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(client.clone(), "default");
    let claim: ResourceClaim = serde_json::from_value(json!({
        "metadata": {"name": "nic-a", "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "nic",
            "exactly": {"deviceClassName": "netclaim-nic"}}]}}
    }))
    .unwrap();
    let claim = claims.create(&PostParams::default(), &claim).await.unwrap();
    let uid = claim.metadata.uid.clone().unwrap();
    let rows = table(&kubectl.run(&["get", "resourceclaims"]).await);
    assert_eq!(rows[0], ["NAME", "STATE", "AGE"], "{rows:?}");
    assert_eq!(rows[1][..2], ["nic-a", "pending"], "{rows:?}");

    let allocation = json!({"status": {
        "allocation": {"devices": {"results": [{
            "request": "nic", "driver": DRIVER, "pool": NODE, "device": "pci-0000-03-00-0"}]}},
        "reservedFor": [{"resource": "pods", "name": "app", "uid": "pod-uid-1"}]
    }});
    claims
        .patch_status("nic-a", &PatchParams::default(), &Patch::Merge(&allocation))
        .await
        .unwrap();
    let prepared = PreparedClaim {
        uid: uid.clone(),
        namespace: "default".into(),
        name: "nic-a".into(),
        pods: Vec::new(),
        pod_claim_name: None,
        nics: vec![attached_nic()],
    };
    let written = ClaimStatusApply::new(client.clone())
        .apply(&uid, &claim_status(&prepared, DRIVER))
        .await;
    assert!(matches!(written, Applied::Done), "{written:?}");

    let rows = table(&kubectl.run(&["get", "resourceclaim", "nic-a"]).await);
    assert_eq!(rows[1][..2], ["nic-a", "allocated,reserved"], "{rows:?}");
    let yaml = kubectl
        .run(&["get", "resourceclaim", "nic-a", "-o", "yaml"])
        .await;
    let shown = ResourceClaim::deserialize(serde_yaml::Deserializer::from_str(&yaml)).unwrap();
    let status = shown.status.unwrap();
    let device = &status.devices.unwrap()[0];
    assert_eq!(device.driver, DRIVER);
    assert_eq!(device.device, "pci-0000-03-00-0");
    let network = device.network_data.as_ref().unwrap();
    assert_eq!(network.interface_name.as_deref(), Some("net1"));
    assert_eq!(
        network.ips.as_deref(),
        Some(&["192.0.2.10/24".to_owned()][..])
    );
    let ready = &device.conditions.as_ref().unwrap()[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "True")
    );
    assert_eq!(ready.reason, "NetworkReady");
    // The YAML an admin reads names the interface and its address in the claim's status.
    assert!(yaml.contains("interfaceName: net1"), "{yaml}");
    assert!(yaml.contains("- 192.0.2.10/24"), "{yaml}");

    let classes = table(&kubectl.run(&["get", "deviceclasses"]).await);
    assert_eq!(classes[0], ["NAME", "AGE"], "{classes:?}");
    assert_eq!(classes[1][0], "netclaim-nic", "{classes:?}");
    // All namespaces: kubectl adds NAMESPACE from the rows' object metadata.
    let everywhere = table(&kubectl.run(&["get", "resourceclaims", "-A"]).await);
    assert_eq!(everywhere[0][..2], ["NAMESPACE", "NAME"], "{everywhere:?}");
    assert_eq!(everywhere[1][..2], ["default", "nic-a"], "{everywhere:?}");

    publisher.shutdown(false).await;
    server.shutdown().await;
}

/// Creating objects works with kubectl too, without schema validation: the stand-in serves
/// no OpenAPI documents (`--validate=false`).
#[tokio::test]
async fn kubectl_creates_the_examples_without_openapi_validation() {
    let server = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl {
        kubeconfig: dir.path().join("kubeconfig"),
        cache: dir.path().join("cache"),
    };
    server.write_kubeconfig(&kubectl.kubeconfig).unwrap();
    let out = kubectl
        .run(&[
            "create",
            "--validate=false",
            "-f",
            "examples/install/deviceclass.yaml",
            "-f",
            "examples/claims/cni-nad.yaml",
        ])
        .await;
    for created in [
        "deviceclass.resource.k8s.io/netclaim-nic created",
        "networkattachmentdefinition.k8s.cni.cncf.io/macnet created",
        "resourceclaimtemplate.resource.k8s.io/macnet-nad created",
    ] {
        assert!(out.contains(created), "{out}");
    }
    let templates = table(&kubectl.run(&["get", "resourceclaimtemplates"]).await);
    assert_eq!(templates[0], ["NAME", "AGE"], "{templates:?}");
    assert_eq!(templates[1][0], "macnet-nad", "{templates:?}");
    server.shutdown().await;
}
