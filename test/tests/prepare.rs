//! Prepare, unprepare and claim status through the real path: claims live in the API server
//! stand-in (allocated the way the scheduler does it, by a status update), are read back
//! with a real kube client and handed to `NetclaimDriver`; the checkpoint is a real file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kubeletplugin::{ClaimRef, DraDriver, Plugin};
use netclaim::checkpoint::{Checkpoint, Durability, Recovery};
use netclaim::prepare::{Detacher, HostDevices, HostNic, NetclaimDriver};
use netclaim::state::{AttachPhase, Attachment, LinkSnapshot, PreparedNic};
use netclaim_api::PluginAllowlist;
use netclaim_test::apiserver::{ApiServer, ApiServerOptions};
use netclaim_test::kubelet::{DraApiVersion, KubeletStandIn};
use serde_json::{Value, json};

const NS: &str = "default";

/// Host NICs by device name; devices can vanish mid-test.
#[derive(Default)]
struct FakeHost(Mutex<BTreeMap<String, HostNic>>);

impl FakeHost {
    fn with(devices: &[(&str, Option<u32>)]) -> Arc<Self> {
        let host = FakeHost::default();
        for (index, (name, mtu_max)) in devices.iter().enumerate() {
            host.0.lock().unwrap().insert(
                name.to_string(),
                HostNic {
                    if_name: name.to_string(),
                    if_index: 10 + index as u32,
                    kind: "veth".into(),
                    mtu_max: *mtu_max,
                    pci_address: None,
                    shared_children: None,
                    published: None,
                },
            );
        }
        Arc::new(host)
    }

    /// Adds `device` (a PCI NIC) as a shared parent with `children` children.
    fn add_shared(&self, device: &str, pci: &str, children: u32) {
        self.0.lock().unwrap().insert(
            device.to_string(),
            HostNic {
                if_name: device.to_string(),
                if_index: 40,
                kind: String::new(),
                mtu_max: None,
                pci_address: Some(pci.to_string()),
                shared_children: Some(children),
                published: None,
            },
        );
    }

    fn remove(&self, device: &str) {
        self.0.lock().unwrap().remove(device);
    }
}

impl HostDevices for FakeHost {
    fn host_nic(&self, device_name: &str) -> Option<HostNic> {
        self.0.lock().unwrap().get(device_name).cloned()
    }
}

/// Records detach calls; fails while `fail` is set.
#[derive(Default)]
struct FakeDetacher {
    calls: Mutex<Vec<(String, String)>>,
    fail: AtomicBool,
}

impl Detacher for FakeDetacher {
    async fn detach(&self, claim_uid: &str, nic: &PreparedNic) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push((claim_uid.to_owned(), nic.device.clone()));
        if self.fail.load(Ordering::SeqCst) {
            Err("netns /run/netns/pod is busy".into())
        } else {
            Ok(())
        }
    }
}

type Driver = NetclaimDriver<Arc<FakeHost>, Arc<FakeDetacher>>;

struct Setup {
    server: ApiServer,
    claims: Api<ResourceClaim>,
    dir: tempfile::TempDir,
    host: Arc<FakeHost>,
    detacher: Arc<FakeDetacher>,
    checkpoint: Arc<Checkpoint>,
    driver: Driver,
}

async fn setup() -> Setup {
    setup_with(ApiServerOptions::default()).await
}

/// [`setup`] against an API server emulating `options` (shared NICs need consumable
/// capacity: Kubernetes 1.36, or the gate on).
async fn setup_with(options: ApiServerOptions) -> Setup {
    let server = ApiServer::start_with(options).await.unwrap();
    let claims = Api::namespaced(server.client(), NS);
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::with(&[("eth1", Some(9000)), ("eth2", Some(9000)), ("eth3", None)]);
    let detacher = Arc::new(FakeDetacher::default());
    let checkpoint = Arc::new(Checkpoint::open(dir.path(), Recovery::Fail).unwrap());
    let driver = NetclaimDriver::new(checkpoint.clone(), host.clone(), detacher.clone());
    Setup {
        server,
        claims,
        dir,
        host,
        detacher,
        checkpoint,
        driver,
    }
}

/// A netclaim opaque config entry for the allocation.
fn config(source: &str, requests: &[&str], interface: Value) -> Value {
    opaque(
        source,
        requests,
        "netclaim.dev",
        json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "interface": interface}),
    )
}

fn opaque(source: &str, requests: &[&str], driver: &str, parameters: Value) -> Value {
    let mut entry =
        json!({"source": source, "opaque": {"driver": driver, "parameters": parameters}});
    if !requests.is_empty() {
        entry["requests"] = json!(requests);
    }
    entry
}

/// Creates claim `name` with one request per (request, device), then allocates it like the
/// scheduler (status update: allocation and reservedFor) and returns it as the API has it.
async fn allocated_claim(
    claims: &Api<ResourceClaim>,
    name: &str,
    devices: &[(&str, &str)],
    configs: Vec<Value>,
    pods: &[&str],
) -> ResourceClaim {
    let requests: Vec<Value> = devices
        .iter()
        .map(|(request, _)| {
            json!({"name": request, "exactly": {"deviceClassName": "netclaim", "allocationMode": "ExactCount", "count": 1}})
        })
        .collect();
    let claim: ResourceClaim = serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"devices": {"requests": requests}},
    }))
    .unwrap();
    let mut created = claims.create(&PostParams::default(), &claim).await.unwrap();
    let results: Vec<Value> = devices
        .iter()
        .map(|(request, device)| {
            json!({"request": request, "driver": "netclaim.dev", "pool": "node-a", "device": device})
        })
        .collect();
    let reserved: Vec<Value> = pods
        .iter()
        .map(|pod| json!({"resource": "pods", "name": format!("pod-{pod}"), "uid": pod}))
        .collect();
    created.status = Some(
        serde_json::from_value(json!({
            "allocation": {"devices": {"results": results, "config": configs}},
            "reservedFor": reserved,
        }))
        .unwrap(),
    );
    claims
        .replace_status(name, &PostParams::default(), &created)
        .await
        .unwrap()
}

fn uid(claim: &ResourceClaim) -> String {
    claim.metadata.uid.clone().unwrap()
}

fn claim_ref(claim: &ResourceClaim) -> ClaimRef {
    ClaimRef {
        namespace: NS.into(),
        name: claim.metadata.name.clone().unwrap(),
        uid: uid(claim),
    }
}

async fn prepare_one(
    driver: &impl DraDriver,
    claim: &ResourceClaim,
) -> kubeletplugin::PrepareResult {
    let mut results = driver.prepare(vec![claim.clone()]).await;
    assert_eq!(results.len(), 1);
    results.remove(&uid(claim)).unwrap()
}

fn attachment() -> Attachment {
    Attachment {
        sandbox_id: "sandbox-1".into(),
        netns_path: "/run/netns/pod".into(),
        host: LinkSnapshot {
            if_name: "eth1".into(),
            mtu: 1500,
            ..LinkSnapshot::default()
        },
        pod_if_name: "net1".into(),
        phase: AttachPhase::Attached,
        pod: None,
        network: None,
        error: None,
    }
}

/// Records `attachment` for `device` of the claim, as a hook would.
async fn record_attachment(
    checkpoint: &Arc<Checkpoint>,
    claim_uid: &str,
    device: &str,
    share_id: Option<&str>,
    attachment: Option<Attachment>,
) {
    checkpoint
        .update_nic(
            claim_uid,
            device,
            share_id,
            Durability::Volatile,
            move |nic| {
                nic.attachment = attachment;
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn prepare_writes_checkpoint_survives_restart_and_retries_idempotently() {
    let s = setup().await;
    let claim = allocated_claim(
        &s.claims,
        "nic-a",
        &[("nic", "eth1")],
        vec![config(
            "FromClaim",
            &["nic"],
            json!({"name": "net1", "addresses": ["192.0.2.10/24"]}),
        )],
        &["pod-1"],
    )
    .await;

    let devices = prepare_one(&s.driver, &claim).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].requests, vec!["nic".to_string()]);
    assert_eq!(devices[0].pool_name, "node-a");
    assert_eq!(devices[0].device_name, "eth1");
    let on_disk = s.checkpoint.on_disk().unwrap();
    let prepared = &on_disk[&uid(&claim)];
    let pods: Vec<(&str, &str)> = prepared
        .pods
        .iter()
        .map(|p| (p.namespace.as_str(), p.uid.as_str()))
        .collect();
    assert_eq!(pods, [("default", "pod-1")]);
    assert_eq!(prepared.nics[0].host_if_name, "eth1");
    assert_eq!(prepared.nics[0].config.name.as_deref(), Some("net1"));
    assert_eq!(s.checkpoint.save_count(), 1);

    // A retry returns the same devices without writing.
    assert_eq!(prepare_one(&s.driver, &claim).await.unwrap(), devices);
    assert_eq!(s.checkpoint.save_count(), 1);

    // A restart: a new driver over the same directory knows the claim, and a retry works
    // even though the NIC has left the host (it is in the pod by now).
    drop(s.driver);
    let checkpoint = Arc::new(Checkpoint::open(s.dir.path(), Recovery::Fail).unwrap());
    s.host.remove("eth1");
    let restarted = NetclaimDriver::new(checkpoint.clone(), s.host.clone(), s.detacher.clone());
    assert_eq!(restarted.claims_for_pod("pod-1").len(), 1);
    assert!(restarted.claims_for_pod("pod-2").is_empty());
    assert_eq!(prepare_one(&restarted, &claim).await.unwrap(), devices);
    assert_eq!(checkpoint.save_count(), 0);
}

/// Each bad config gives a per-claim error naming the claim, the config and the field, and
/// leaves nothing in the checkpoint.
#[tokio::test]
async fn bad_configs_fail_the_claim_naming_the_field() {
    let s = setup().await;
    let big = "x".repeat(11 * 1024);
    let base = |interface: Value| json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "interface": interface});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown-field",
            base(json!({"nmae": "net1"})),
            "interface.nmae",
        ),
        ("wrong-type", base(json!({"mtu": "big"})), "interface.mtu"),
        (
            "bad-api-version",
            json!({"apiVersion": "netclaim.dev/v9", "kind": "NetworkConfig"}),
            "apiVersion",
        ),
        (
            "mtu-range",
            base(json!({"mtu": 70000})),
            "interface.mtu: 70000",
        ),
        (
            "bad-address",
            base(json!({"addresses": ["192.0.2.300/24"]})),
            "interface.addresses[0]",
        ),
        (
            "gateway-family",
            base(
                json!({"addresses": ["192.0.2.10/24"], "routes": [{"destination": "0.0.0.0/0", "gateway": "2001:db8::1"}]}),
            ),
            "interface.routes[0].gateway",
        ),
    ];
    for (name, parameters, wanted) in cases {
        let claim = allocated_claim(
            &s.claims,
            name,
            &[("nic", "eth1")],
            vec![opaque("FromClaim", &["nic"], "netclaim.dev", parameters)],
            &["pod-1"],
        )
        .await;
        let error = prepare_one(&s.driver, &claim)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!(
                "claim default/{name}: claim config[0] (requests [nic])"
            )),
            "{name}: {error}"
        );
        assert!(error.contains(wanted), "{name}: want {wanted:?} in {error}");
        assert!(s.checkpoint.on_disk().unwrap().is_empty(), "{name}");
    }
    // Parameters over 10 KiB never reach the driver: the API refuses such an allocation
    // (the parser's own limit is unit-tested in netclaim-api).
    let claim: ResourceClaim = serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "too-big", "namespace": NS},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "netclaim"}}]}},
    }))
    .unwrap();
    let mut created = s
        .claims
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    created.status = Some(
        serde_json::from_value(json!({"allocation": {"devices": {
            "results": [{"request": "nic", "driver": "netclaim.dev", "pool": "node-a", "device": "eth1"}],
            "config": [opaque("FromClaim", &["nic"], "netclaim.dev", base(json!({"name": big})))],
        }}}))
        .unwrap(),
    );
    let refused = s
        .claims
        .replace_status("too-big", &PostParams::default(), &created)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains(
            "status.allocation.devices.config[0].opaque.parameters: Too long: may not be more than 10240 bytes"
        ),
        "{refused}"
    );
    assert_eq!(s.checkpoint.save_count(), 0);
}

#[tokio::test]
async fn conflicts_and_missing_devices_fail_the_claim() {
    let s = setup().await;
    // Two devices of one claim wanting one name.
    let same_name = allocated_claim(
        &s.claims,
        "same-name",
        &[("a", "eth1"), ("b", "eth2")],
        vec![config("FromClass", &[], json!({"name": "net1"}))],
        &["pod-1"],
    )
    .await;
    let error = prepare_one(&s.driver, &same_name)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("both want interface.name \"net1\""),
        "{error}"
    );

    // A device that left the host.
    let gone = allocated_claim(&s.claims, "gone", &[("nic", "eth9")], vec![], &["pod-1"]).await;
    let error = prepare_one(&s.driver, &gone).await.unwrap_err().to_string();
    assert!(
        error.starts_with("claim default/gone: device eth9"),
        "{error}"
    );
    assert!(error.contains("not found on this node"), "{error}");

    // An MTU the NIC cannot do.
    let jumbo = allocated_claim(
        &s.claims,
        "jumbo",
        &[("nic", "eth1")],
        vec![config("FromClaim", &[], json!({"mtu": 9500}))],
        &["pod-1"],
    )
    .await;
    let error = prepare_one(&s.driver, &jumbo)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("interface.mtu: 9500 is above the maximum 9000"),
        "{error}"
    );
    assert!(s.checkpoint.on_disk().unwrap().is_empty());

    // Claims of one pod wanting one name; a NIC prepared for two claims.
    let first = allocated_claim(
        &s.claims,
        "first",
        &[("nic", "eth1")],
        vec![config("FromClaim", &[], json!({"name": "net1"}))],
        &["pod-1"],
    )
    .await;
    prepare_one(&s.driver, &first).await.unwrap();
    let clash = allocated_claim(
        &s.claims,
        "clash",
        &[("nic", "eth2")],
        vec![config("FromClaim", &[], json!({"name": "net1"}))],
        &["pod-1"],
    )
    .await;
    let error = prepare_one(&s.driver, &clash)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("already taken in the pod by device eth1 of claim default/first"),
        "{error}"
    );
    let twice = allocated_claim(&s.claims, "twice", &[("nic", "eth1")], vec![], &["pod-2"]).await;
    let error = prepare_one(&s.driver, &twice)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("already prepared for claim default/first"),
        "{error}"
    );
    // Another pod may use the name.
    let other_pod = allocated_claim(
        &s.claims,
        "other-pod",
        &[("nic", "eth2")],
        vec![config("FromClaim", &[], json!({"name": "net1"}))],
        &["pod-2"],
    )
    .await;
    prepare_one(&s.driver, &other_pod).await.unwrap();
    let uids: Vec<String> = s.checkpoint.on_disk().unwrap().into_keys().collect();
    let mut expected = vec![uid(&first), uid(&other_pod)];
    expected.sort();
    assert_eq!(uids, expected);
}

#[tokio::test]
async fn class_then_claim_precedence_request_scoping_and_other_drivers() {
    let s = setup().await;
    let claim = allocated_claim(
        &s.claims,
        "layered",
        &[("nic", "eth1"), ("other", "eth2")],
        vec![
            config("FromClass", &[], json!({"mtu": 9000, "name": "net1"})),
            // Another driver's config is not ours to parse, however odd it looks.
            opaque(
                "FromClaim",
                &[],
                "gpu.example.com",
                json!({"whatever": [1, 2]}),
            ),
            config("FromClaim", &["nic"], json!({"mtu": 1500})),
            config("FromClaim", &["other"], json!({"name": "net2"})),
        ],
        &["pod-1"],
    )
    .await;
    let devices = prepare_one(&s.driver, &claim).await.unwrap();
    assert_eq!(devices.len(), 2);
    let prepared = s.driver.claims_for_pod("pod-1");
    let nics: BTreeMap<&str, &PreparedNic> = prepared[0]
        .nics
        .iter()
        .map(|nic| (nic.request.as_str(), nic))
        .collect();
    assert_eq!(
        nics["nic"].config.mtu,
        Some(1500),
        "the claim wins over the class"
    );
    assert_eq!(
        nics["nic"].config.name.as_deref(),
        Some("net1"),
        "the class's name stays"
    );
    assert_eq!(
        nics["other"].config.mtu,
        Some(9000),
        "a config for `nic` does not reach `other`"
    );
    assert_eq!(nics["other"].config.name.as_deref(), Some("net2"));
}

#[tokio::test]
async fn a_batch_fails_claim_by_claim_and_foreign_devices_are_ignored() {
    let s = setup().await;
    let good = allocated_claim(&s.claims, "good", &[("nic", "eth1")], vec![], &["pod-1"]).await;
    let bad = allocated_claim(
        &s.claims,
        "bad",
        &[("nic", "eth2")],
        vec![config("FromClaim", &[], json!({"mtu": 1}))],
        &["pod-2"],
    )
    .await;
    let mut foreign =
        allocated_claim(&s.claims, "foreign", &[("gpu", "gpu0")], vec![], &["pod-3"]).await;
    if let Some(results) = foreign
        .status
        .as_mut()
        .and_then(|s| s.allocation.as_mut())
        .and_then(|a| a.devices.as_mut())
        .and_then(|d| d.results.as_mut())
    {
        results[0].driver = "gpu.example.com".into();
    }
    let results = s
        .driver
        .prepare(vec![good.clone(), bad.clone(), foreign.clone()])
        .await;
    assert_eq!(results[&uid(&good)].as_ref().unwrap().len(), 1);
    assert!(
        results[&uid(&bad)]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("interface.mtu")
    );
    assert!(results[&uid(&foreign)].as_ref().unwrap().is_empty());
    let stored: Vec<String> = s.checkpoint.on_disk().unwrap().into_keys().collect();
    assert_eq!(stored, vec![uid(&good)]);
}

#[tokio::test]
async fn unprepare_is_idempotent_and_works_for_gone_claims() {
    let s = setup().await;
    let claim = allocated_claim(&s.claims, "nic-a", &[("nic", "eth1")], vec![], &["pod-1"]).await;
    prepare_one(&s.driver, &claim).await.unwrap();
    s.claims.delete("nic-a", &Default::default()).await.unwrap();

    // After a restart, from the checkpoint alone.
    drop(s.driver);
    let checkpoint = Arc::new(Checkpoint::open(s.dir.path(), Recovery::Fail).unwrap());
    let driver = NetclaimDriver::new(checkpoint.clone(), s.host.clone(), s.detacher.clone());
    let never = ClaimRef {
        namespace: NS.into(),
        name: "never".into(),
        uid: "never-prepared".into(),
    };
    let results = driver.unprepare(vec![claim_ref(&claim), never]).await;
    assert_eq!(results.len(), 2);
    for (uid, result) in &results {
        if let Err(error) = result {
            panic!("unprepare of {uid} failed: {error}");
        }
    }
    assert!(checkpoint.on_disk().unwrap().is_empty());
    let again = driver.unprepare(vec![claim_ref(&claim)]).await;
    assert_eq!(again.len(), 1);
    if let Err(error) = &again[&uid(&claim)] {
        panic!("a second unprepare failed: {error}");
    }
    assert!(s.detacher.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unprepare_detaches_a_nic_still_in_a_pod_before_forgetting_it() {
    let s = setup().await;
    let claim = allocated_claim(&s.claims, "nic-a", &[("nic", "eth1")], vec![], &["pod-1"]).await;
    prepare_one(&s.driver, &claim).await.unwrap();
    record_attachment(
        &s.checkpoint,
        &uid(&claim),
        "eth1",
        None,
        Some(attachment()),
    )
    .await;
    assert_eq!(
        s.checkpoint.on_disk().unwrap()[&uid(&claim)].nics[0].attachment,
        Some(attachment())
    );

    s.detacher.fail.store(true, Ordering::SeqCst);
    let results = s.driver.unprepare(vec![claim_ref(&claim)]).await;
    let error = results[&uid(&claim)].as_ref().unwrap_err().to_string();
    assert!(
        error.contains("device eth1 is still attached to pod sandbox sandbox-1"),
        "{error}"
    );
    assert!(error.contains("busy"), "{error}");
    assert!(s.checkpoint.on_disk().unwrap().contains_key(&uid(&claim)));

    s.detacher.fail.store(false, Ordering::SeqCst);
    let results = s.driver.unprepare(vec![claim_ref(&claim)]).await;
    if let Err(error) = &results[&uid(&claim)] {
        panic!("unprepare after the detach recovered failed: {error}");
    }
    assert!(s.checkpoint.on_disk().unwrap().is_empty());
    let calls = s.detacher.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            (uid(&claim), "eth1".to_string()),
            (uid(&claim), "eth1".to_string())
        ]
    );
}

/// The whole kubelet path: registration, `NodePrepareResources` over the DRA socket, the
/// library fetching the claim from the API server, netclaim's prepare, and back.
#[tokio::test]
async fn prepare_and_unprepare_through_the_kubelet_plugin() {
    let s = setup().await;
    let good = allocated_claim(
        &s.claims,
        "good",
        &[("nic", "eth1")],
        vec![config("FromClaim", &["nic"], json!({"name": "net1"}))],
        &["pod-1"],
    )
    .await;
    let bad = allocated_claim(
        &s.claims,
        "bad",
        &[("nic", "eth2")],
        vec![config("FromClaim", &["nic"], json!({"mtu": 70000}))],
        &["pod-2"],
    )
    .await;
    let registrar = s.dir.path().join("plugins_registry");
    let kubelet = KubeletStandIn::new(&registrar);
    let driver = Arc::new(NetclaimDriver::new(
        s.checkpoint.clone(),
        s.host.clone(),
        s.detacher.clone(),
    ));
    let plugin = Plugin::builder("netclaim.dev", "node-a")
        .kube_client(s.server.client())
        .registrar_dir(&registrar)
        .plugin_data_dir(s.dir.path().join("plugins").join("netclaim.dev"))
        .start(driver)
        .await
        .unwrap();
    let client = kubelet
        .wait_for_plugin("netclaim.dev", Duration::from_secs(10))
        .await
        .unwrap();

    let outcomes = client
        .prepare(DraApiVersion::V1, &[claim_ref(&good), claim_ref(&bad)])
        .await
        .unwrap();
    let ok = &outcomes[&uid(&good)];
    assert_eq!(ok.error, "");
    assert_eq!(ok.devices.len(), 1);
    assert_eq!(ok.devices[0].device_name, "eth1");
    assert_eq!(ok.devices[0].request_names, vec!["nic".to_string()]);
    let failed = &outcomes[&uid(&bad)];
    assert!(
        failed
            .error
            .contains("claim default/bad: claim config[0] (requests [nic]): interface.mtu: 70000"),
        "{failed:?}"
    );
    let stored: Vec<String> = s.checkpoint.on_disk().unwrap().into_keys().collect();
    assert_eq!(stored, vec![uid(&good)]);

    let errors = client
        .unprepare(DraApiVersion::V1, &[claim_ref(&good), claim_ref(&bad)])
        .await
        .unwrap();
    assert!(errors.values().all(String::is_empty), "{errors:?}");
    assert!(s.checkpoint.on_disk().unwrap().is_empty());
    plugin.shutdown().await.unwrap();
}

// ---- CNI mode: NetworkAttachmentDefinition references ----------------------------------

/// The driver of `s`, reading NetworkAttachmentDefinitions from the stand-in API; its
/// admin also allows the `tuning` plugin (`--cni-allowed-plugins`).
fn nad_driver(s: &Setup) -> NetclaimDriver<Arc<FakeHost>, Arc<FakeDetacher>, kube::Client> {
    NetclaimDriver::new(s.checkpoint.clone(), s.host.clone(), s.detacher.clone())
        .with_allowed_plugins(PluginAllowlist::default_and(["tuning"]).unwrap())
        .with_network_attachments(s.server.client())
}

/// The DeviceClass config that lets claims name NetworkAttachmentDefinitions of their own
/// namespace and of `other_namespaces`.
fn nad_grant(other_namespaces: &[&str]) -> Value {
    opaque(
        "FromClass",
        &[],
        "netclaim.dev",
        json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
               "cni": {"claimMayBring": {"networkAttachmentDefinition":
                   {"otherNamespaces": other_namespaces}}}}),
    )
}

fn nad_api(s: &Setup, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    );
    Api::namespaced_with(s.server.client(), namespace, &resource)
}

/// Creates NAD `namespace/name` whose `spec.config` is `config`.
async fn create_nad(s: &Setup, namespace: &str, name: &str, config: &str) {
    let nad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"config": config},
    }))
    .unwrap();
    nad_api(s, namespace)
        .create(&PostParams::default(), &nad)
        .await
        .unwrap();
}

/// A claim config referencing a NAD (`namespace` omitted when `None`).
fn nad_config(namespace: Option<&str>, name: &str) -> Value {
    let mut reference = json!({"name": name});
    if let Some(namespace) = namespace {
        reference["namespace"] = json!(namespace);
    }
    opaque(
        "FromClaim",
        &["nic"],
        "netclaim.dev",
        json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
               "interface": {"name": "net1"},
               "cni": {"networkAttachmentDefinition": reference}}),
    )
}

const MACVLAN_CONFLIST: &str = r#"{"cniVersion": "1.0.0", "name": "macnet-conf", "plugins": [
    {"type": "macvlan", "mode": "bridge", "master": "placeholder",
     "ipam": {"type": "static", "addresses": [{"address": "192.0.2.60/24"}]}},
    {"type": "tuning", "mtu": 1400}]}"#;

#[tokio::test]
async fn a_network_attachment_definition_is_resolved_at_prepare_and_stored_with_the_device() {
    let s = setup().await;
    let driver = nad_driver(&s);
    create_nad(&s, NS, "macnet", MACVLAN_CONFLIST).await;
    // The namespace defaults to the claim's: "default/macnet".
    let claim = allocated_claim(
        &s.claims,
        "nad-a",
        &[("nic", "eth1")],
        vec![nad_grant(&[]), nad_config(None, "macnet")],
        &["pod-1"],
    )
    .await;
    let devices = prepare_one(&driver, &claim).await.unwrap();
    assert_eq!(devices[0].device_name, "eth1");
    let nic = s.checkpoint.on_disk().unwrap()[&uid(&claim)].nics[0].clone();
    let list = nic.cni.clone().unwrap();
    assert_eq!(
        list["name"], "macnet-conf",
        "the CNI cache needs the list's own name"
    );
    assert_eq!(list["cniVersion"], "1.0.0");
    assert_eq!(list["plugins"][0]["type"], "macvlan");
    assert_eq!(
        list["plugins"][0]["master"], "eth1",
        "device not substituted: {list}"
    );
    assert_eq!(
        list["plugins"][0]["ipam"]["addresses"][0]["address"],
        "192.0.2.60/24"
    );
    assert_eq!(list["plugins"][1], json!({"type": "tuning", "mtu": 1400}));
    assert_eq!(
        nic.network_attachment_definition.as_deref(),
        Some("default/macnet")
    );
    assert_eq!(nic.config.name.as_deref(), Some("net1"));

    // The stored list is what runs: editing the NAD does not change a prepared claim.
    let mut nad = nad_api(&s, NS).get("macnet").await.unwrap();
    nad.data["spec"]["config"] =
        json!(r#"{"cniVersion": "1.0.0", "name": "other", "type": "ipvlan"}"#);
    nad_api(&s, NS)
        .replace("macnet", &PostParams::default(), &nad)
        .await
        .unwrap();
    assert_eq!(prepare_one(&driver, &claim).await.unwrap(), devices);
    let again = s.checkpoint.on_disk().unwrap()[&uid(&claim)].nics[0].clone();
    assert_eq!(again, nic);
    assert_eq!(s.checkpoint.save_count(), 1);
}

#[tokio::test]
async fn a_single_plugin_nad_of_another_namespace_runs_as_a_one_plugin_list() {
    let s = setup().await;
    let driver = nad_driver(&s);
    let single = r#"{"cniVersion": "0.4.0", "name": "ipnet", "type": "ipvlan",
                     "ipam": {"type": "static", "addresses": [{"address": "198.51.100.7/24"}]}}"#;
    create_nad(&s, "team-a", "ipnet", single).await;
    let claim = allocated_claim(
        &s.claims,
        "nad-b",
        &[("nic", "eth2")],
        vec![nad_grant(&["team-a"]), nad_config(Some("team-a"), "ipnet")],
        &["pod-1"],
    )
    .await;
    prepare_one(&driver, &claim).await.unwrap();
    let nic = s.checkpoint.on_disk().unwrap()[&uid(&claim)].nics[0].clone();
    let list = nic.cni.unwrap();
    assert_eq!(list["name"], "ipnet");
    assert_eq!(list["plugins"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["plugins"][0]["type"], "ipvlan");
    assert_eq!(list["plugins"][0]["master"], "eth2");
    assert!(list["plugins"][0].get("name").is_none(), "{list}");
    assert_eq!(
        nic.network_attachment_definition.as_deref(),
        Some("team-a/ipnet")
    );

    // Without a namespace the reference means the claim's namespace, where there is none.
    let elsewhere = allocated_claim(
        &s.claims,
        "nad-c",
        &[("nic", "eth3")],
        vec![nad_grant(&[]), nad_config(None, "ipnet")],
        &["pod-2"],
    )
    .await;
    let error = prepare_one(&driver, &elsewhere)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cni.networkAttachmentDefinition: default/ipnet: not found"),
        "{error}"
    );
}

/// Every unusable reference fails its claim with an error naming the claim, the config,
/// the reference and (for a bad `spec.config`) the field, and stores nothing.
#[tokio::test]
async fn bad_network_attachment_definitions_fail_the_claim_naming_the_field() {
    let s = setup().await;
    let driver = nad_driver(&s);
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        ("missing", None, "not found"),
        (
            "bad-json",
            Some(r#"{"cniVersion": "1.0.0", "#),
            "spec.config: not valid JSON: ",
        ),
        (
            "traversal",
            Some(r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../x"}]}"#),
            "spec.config: plugins[0].type: \"../x\" contains a path separator",
        ),
        (
            "no-plugins",
            Some(r#"{"cniVersion": "1.0.0", "name": "n"}"#),
            "spec.config: plugins: ",
        ),
        (
            "no-type",
            Some(r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"mode": "bridge"}]}"#),
            "spec.config: plugins[0].type: every plugin needs a type",
        ),
        (
            "reserved",
            Some(r#"{"cniVersion": "1.0.0", "name": "n", "type": "macvlan", "prevResult": {}}"#),
            "spec.config: plugins[0].prevResult: ",
        ),
        (
            "empty",
            Some(""),
            "spec.config is empty (netclaim does not read CNI config files from the node",
        ),
    ];
    for (index, (nad, config, expected)) in cases.into_iter().enumerate() {
        if let Some(config) = config {
            create_nad(&s, NS, nad, config).await;
        }
        let name = format!("bad-nad-{index}");
        let claim = allocated_claim(
            &s.claims,
            &name,
            &[("nic", "eth1")],
            vec![nad_grant(&[]), nad_config(None, nad)],
            &["pod-1"],
        )
        .await;
        let error = prepare_one(&driver, &claim).await.unwrap_err().to_string();
        let prefix = format!(
            "claim default/{name}: claim config[0] (requests [nic]): \
             cni.networkAttachmentDefinition: default/{nad}: {expected}"
        );
        assert!(
            error.starts_with(&prefix),
            "{nad}: {error}\nwanted {prefix}"
        );
    }
    assert!(s.checkpoint.on_disk().unwrap().is_empty());
    assert_eq!(s.checkpoint.save_count(), 0);
}

#[tokio::test]
async fn api_errors_reading_a_nad_fail_the_claim_and_a_retry_succeeds() {
    let s = setup().await;
    let driver = nad_driver(&s);
    create_nad(&s, NS, "macnet", MACVLAN_CONFLIST).await;
    let claim = allocated_claim(
        &s.claims,
        "nad-rbac",
        &[("nic", "eth1")],
        vec![nad_grant(&[]), nad_config(None, "macnet")],
        &["pod-1"],
    )
    .await;
    s.server
        .faults()
        .fail_next("GET", "network-attachment-definitions", 1, 403);
    let error = prepare_one(&driver, &claim).await.unwrap_err().to_string();
    assert!(
        error.contains("cni.networkAttachmentDefinition: default/macnet: forbidden")
            && error.contains("RBAC"),
        "{error}"
    );
    assert!(s.checkpoint.on_disk().unwrap().is_empty());
    s.server
        .faults()
        .fail_next("GET", "network-attachment-definitions", 1, 500);
    let error = prepare_one(&driver, &claim).await.unwrap_err().to_string();
    assert!(
        error.contains("default/macnet: reading it from the API failed"),
        "{error}"
    );
    // The kubelet retries prepare; once the API answers, the claim is prepared.
    prepare_one(&driver, &claim).await.unwrap();
    assert_eq!(s.checkpoint.on_disk().unwrap().len(), 1);

    // A driver built without API access refuses references clearly.
    let other = allocated_claim(
        &s.claims,
        "nad-no-client",
        &[("nic", "eth2")],
        vec![nad_grant(&[]), nad_config(None, "macnet")],
        &["pod-2"],
    )
    .await;
    let error = prepare_one(&s.driver, &other)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("has no Kubernetes API client"), "{error}");
}

// ---- shared parent NICs (DRA consumable capacity) ------------------------------------

/// A CNI-mode DeviceClass config (the admin's): a macvlan child named `ifname` on the
/// allocated device, for `requests` (the scheduler lists a class config's requests).
fn macvlan_config(requests: &[&str], ifname: &str) -> Value {
    opaque(
        "FromClass",
        requests,
        "netclaim.dev",
        json!({
            "apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
            "interface": {"name": ifname},
            "cni": {"cniVersion": "1.0.0", "name": "macnet",
                    "plugins": [{"type": "macvlan", "mode": "bridge"}]}
        }),
    )
}

/// Claim `name` allocated like the scheduler allocates a device that allows multiple
/// allocations: each (request, device, share id) result with its own share id and one
/// child consumed.
async fn allocated_shared_claim(
    claims: &Api<ResourceClaim>,
    name: &str,
    results: &[(&str, &str, &str)],
    configs: Vec<Value>,
    pod: &str,
) -> ResourceClaim {
    let mut requests: Vec<&str> = results.iter().map(|(request, _, _)| *request).collect();
    requests.dedup();
    let requests: Vec<Value> = requests
        .iter()
        .map(|request| {
            json!({"name": request, "exactly": {"deviceClassName": "netclaim-shared",
                   "capacity": {"requests": {"netclaim.dev/children": "1"}}}})
        })
        .collect();
    let claim: ResourceClaim = serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"devices": {"requests": requests}},
    }))
    .unwrap();
    let mut created = claims.create(&PostParams::default(), &claim).await.unwrap();
    let results: Vec<Value> = results
        .iter()
        .map(|(request, device, share)| {
            json!({"request": request, "driver": "netclaim.dev", "pool": "node-a",
                   "device": device, "shareID": share,
                   "consumedCapacity": {"netclaim.dev/children": "1"}})
        })
        .collect();
    created.status = Some(
        serde_json::from_value(json!({
            "allocation": {"devices": {"results": results, "config": configs}},
            "reservedFor": [{"resource": "pods", "name": format!("pod-{pod}"), "uid": pod}],
        }))
        .unwrap(),
    );
    claims
        .replace_status(name, &PostParams::default(), &created)
        .await
        .unwrap()
}

fn share(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

#[tokio::test]
async fn a_shared_parent_refuses_claims_that_would_move_it() {
    let s = setup_with(ApiServerOptions::kubernetes(36)).await;
    s.host.add_shared("eth4", "0000:03:00.0", 2);
    let static_claim = allocated_shared_claim(
        &s.claims,
        "static",
        &[("nic", "eth4", &share(1))],
        vec![config("FromClaim", &[], json!({"name": "net1"}))],
        "pod-1",
    )
    .await;
    let error = prepare_one(&s.driver, &static_claim)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("claim default/static: device eth4 (pool node-a, request nic)"),
        "{error}"
    );
    assert!(error.contains("shared parent"), "{error}");
    assert!(error.contains("cni"), "{error}");
    assert!(s.checkpoint.on_disk().unwrap().is_empty());
}

#[tokio::test]
async fn a_shared_parent_takes_as_many_cni_children_as_its_capacity() {
    let s = setup_with(ApiServerOptions::kubernetes(36)).await;
    s.host.add_shared("eth4", "0000:03:00.0", 2);
    let mut claims = Vec::new();
    for n in 1..=3u32 {
        claims.push(
            allocated_shared_claim(
                &s.claims,
                &format!("child-{n}"),
                &[("nic", "eth4", &share(n))],
                vec![macvlan_config(&[], "net1")],
                &format!("pod-{n}"),
            )
            .await,
        );
    }
    for claim in &claims[..2] {
        let devices = prepare_one(&s.driver, claim).await.unwrap();
        assert_eq!(
            devices[0].share_id,
            claim_share(claim),
            "the share id goes back"
        );
    }
    // The PCI address reaches the plugin as deviceID (SR-IOV style plugins read it).
    let stored = s.checkpoint.on_disk().unwrap();
    let cni = stored[&uid(&claims[0])].nics[0].cni.clone().unwrap();
    assert_eq!(cni["plugins"][0]["master"], "eth4", "{cni}");
    assert_eq!(cni["plugins"][0]["deviceID"], "0000:03:00.0", "{cni}");

    let error = prepare_one(&s.driver, &claims[2])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("claim default/child-3: device eth4 (pool node-a): over capacity"),
        "{error}"
    );
    assert!(error.contains("netclaim.dev/children"), "{error}");
    assert!(error.contains("room for 2"), "{error}");
    assert!(
        error.contains("default/child-1") && error.contains("default/child-2"),
        "{error}"
    );
    assert!(
        !s.checkpoint
            .on_disk()
            .unwrap()
            .contains_key(&uid(&claims[2]))
    );

    // One child goes: the retry fits.
    let results = s.driver.unprepare(vec![claim_ref(&claims[0])]).await;
    if let Err(error) = &results[&uid(&claims[0])] {
        panic!("unprepare of child-1 failed: {error}");
    }
    prepare_one(&s.driver, &claims[2]).await.unwrap();
    assert_eq!(s.checkpoint.on_disk().unwrap().len(), 2);
}

fn claim_share(claim: &ResourceClaim) -> Option<String> {
    claim
        .status
        .as_ref()?
        .allocation
        .as_ref()?
        .devices
        .as_ref()?
        .results
        .as_ref()?[0]
        .share_id
        .clone()
}

#[tokio::test]
async fn one_claim_may_hold_a_shared_parent_twice_under_two_share_ids() {
    let s = setup_with(ApiServerOptions::kubernetes(36)).await;
    s.host.add_shared("eth4", "0000:03:00.0", 4);
    let claim = allocated_shared_claim(
        &s.claims,
        "twice",
        &[("a", "eth4", &share(1)), ("b", "eth4", &share(2))],
        vec![
            macvlan_config(&["a"], "net1"),
            macvlan_config(&["b"], "net2"),
        ],
        "pod-1",
    )
    .await;
    let devices = prepare_one(&s.driver, &claim).await.unwrap();
    let shares: Vec<Option<String>> = devices.iter().map(|d| d.share_id.clone()).collect();
    assert_eq!(shares, vec![Some(share(1)), Some(share(2))]);

    // Each allocation has its own attachment record.
    record_attachment(
        &s.checkpoint,
        &uid(&claim),
        "eth4",
        Some(&share(2)),
        Some(attachment()),
    )
    .await;
    let nics = s.checkpoint.on_disk().unwrap()[&uid(&claim)].nics.clone();
    let attached: Vec<(Option<String>, bool)> = nics
        .iter()
        .map(|n| (n.share_id.clone(), n.attachment.is_some()))
        .collect();
    assert_eq!(
        attached,
        vec![(Some(share(1)), false), (Some(share(2)), true)]
    );
    // One name for both children is refused, and so is one share id twice.
    let same_name = allocated_shared_claim(
        &s.claims,
        "same-name",
        &[("a", "eth4", &share(3)), ("b", "eth4", &share(4))],
        vec![macvlan_config(&[], "net1")],
        "pod-2",
    )
    .await;
    let error = prepare_one(&s.driver, &same_name)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("both want interface.name \"net1\""),
        "{error}"
    );
    let same_share = allocated_shared_claim(
        &s.claims,
        "same-share",
        &[("a", "eth4", &share(5)), ("b", "eth4", &share(5))],
        vec![
            macvlan_config(&["a"], "net1"),
            macvlan_config(&["b"], "net2"),
        ],
        "pod-3",
    )
    .await;
    let error = prepare_one(&s.driver, &same_share)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("allocated twice to this claim"), "{error}");
}

// ---- CDI specs, RDMA character devices and device metadata ---------------------------

fn sysfs_fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sysfs")
}

/// The driver of `s` writing CDI specs to `<dir>/cdi` and device metadata under
/// `<dir>/plugins/netclaim.dev`, with RDMA facts from the sysfs fixture tree; and the host
/// NIC `ens1f0` (the fixture's RDMA PF) published with two attributes.
fn cdi_driver(s: &Setup) -> (Driver, netclaim::claim_files::ClaimFiles) {
    s.host.0.lock().unwrap().insert(
        "ens1f0".into(),
        HostNic {
            if_name: "ens1f0".into(),
            if_index: 50,
            kind: String::new(),
            mtu_max: None,
            pci_address: Some("0000:03:00.0".into()),
            shared_children: None,
            published: Some(json!({"name": "ens1f0", "attributes": {
                "ifName": {"string": "ens1f0"}, "rdma": {"bool": true}}})),
        },
    );
    let files = netclaim::claim_files::ClaimFiles::new(
        s.dir.path().join("cdi"),
        "netclaim.dev",
        Some(&s.dir.path().join("plugins/netclaim.dev")),
        sysfs_fixtures(),
    )
    .unwrap();
    let driver = NetclaimDriver::new(s.checkpoint.clone(), s.host.clone(), s.detacher.clone())
        .with_claim_files(files.clone());
    (driver, files)
}

fn read_json(path: &std::path::Path) -> Value {
    netclaim::device_metadata::first_object(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn prepare_writes_the_cdi_spec_and_metadata_and_unprepare_removes_them() {
    let s = setup().await;
    let (driver, files) = cdi_driver(&s);
    // A claim made from a template: the pod's name for it names the metadata directory.
    let claim: ResourceClaim = serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "web-0-rdma-x7k2q", "namespace": NS,
                     "annotations": {"resource.kubernetes.io/pod-claim-name": "rdma"}},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "netclaim"}}]}},
    }))
    .unwrap();
    let mut created = s
        .claims
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    created.status = Some(
        serde_json::from_value(json!({
            "allocation": {"devices": {"results": [
                {"request": "nic", "driver": "netclaim.dev", "pool": "node-a", "device": "ens1f0"}
            ]}},
            "reservedFor": [{"resource": "pods", "name": "web-0", "uid": "pod-1"}],
        }))
        .unwrap(),
    );
    let claim = s
        .claims
        .replace_status("web-0-rdma-x7k2q", &PostParams::default(), &created)
        .await
        .unwrap();
    let claim_uid = uid(&claim);

    let devices = prepare_one(&driver, &claim).await.unwrap();
    let cdi_id = format!("netclaim.dev/net={claim_uid}-ens1f0");
    assert_eq!(devices[0].cdi_device_ids, [cdi_id]);

    // The spec: the RDMA PF's verbs, MAD and CM devices (not issm0, not mlx5_1's uverbs1)
    // and the read-only metadata mount at the Go helper's container path.
    let spec_path = s
        .dir
        .path()
        .join(format!("cdi/netclaim.dev-net_{claim_uid}.json"));
    let metadata_path = s.dir.path().join(format!(
        "plugins/netclaim.dev/dra-device-metadata/{claim_uid}/nic/metadata.json"
    ));
    assert_eq!(
        read_json(&spec_path),
        json!({
            "cdiVersion": "0.5.0",
            "kind": "netclaim.dev/net",
            "devices": [{
                "name": format!("{claim_uid}-ens1f0"),
                "containerEdits": {
                    "deviceNodes": [
                        {"path": "/dev/infiniband/rdma_cm", "type": "c", "major": 10, "minor": 58, "fileMode": 438},
                        {"path": "/dev/infiniband/umad0", "type": "c", "major": 231, "minor": 0, "fileMode": 384},
                        {"path": "/dev/infiniband/uverbs0", "type": "c", "major": 231, "minor": 192, "fileMode": 438}
                    ],
                    "mounts": [{
                        "hostPath": metadata_path.display().to_string(),
                        "containerPath": "/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/rdma/nic/netclaim.dev-metadata.json",
                        "options": ["ro", "bind"]
                    }]
                }
            }]
        })
    );
    // The metadata before the attach: the device and its published attributes, no
    // network data yet.
    let expected_metadata = |generation: i64, network: Option<Value>| {
        let mut device = json!({"driver": "netclaim.dev", "pool": "node-a", "name": "ens1f0",
            "attributes": {"ifName": {"string": "ens1f0"}, "rdma": {"bool": true}}});
        if let Some(network) = network {
            device["networkData"] = network;
        }
        json!({
            "apiVersion": "metadata.resource.k8s.io/v1alpha1", "kind": "DeviceMetadata",
            "metadata": {"name": "web-0-rdma-x7k2q", "namespace": NS, "uid": claim_uid,
                         "generation": generation},
            "podClaimName": "rdma",
            "requests": [{"name": "nic", "devices": [device]}]
        })
    };
    assert_eq!(read_json(&metadata_path), expected_metadata(1, None));
    // The checkpoint records what the attach needs.
    let stored = s.checkpoint.on_disk().unwrap();
    let rdma = stored[&claim_uid].nics[0].rdma.clone().unwrap();
    assert_eq!(rdma.device, "mlx5_0");
    assert!(!rdma.netns_exclusive, "the fixture's ib_core says shared");
    assert_eq!(rdma.char_devices.len(), 3);
    assert_eq!(stored[&claim_uid].pod_claim_name.as_deref(), Some("rdma"));

    // A retry after a reboot emptied /var/run/cdi writes the spec again, same ids.
    std::fs::remove_file(&spec_path).unwrap();
    assert_eq!(prepare_one(&driver, &claim).await.unwrap(), devices);
    assert!(spec_path.is_file());

    // Once attached, the metadata carries the network data (a hook rewrites it; a prepare
    // retry, being level-triggered, too), and the generation moves on.
    let mut attached = attachment();
    attached.network = Some(netclaim::state::AttachedNetwork {
        data: netclaim::state::NetworkData {
            interface_name: "net1".into(),
            ips: vec!["192.0.2.10/24".parse().unwrap()],
            hardware_address: Some("02:00:00:00:00:0a".into()),
        },
        cni_result: None,
        since: "2026-01-01T00:00:00Z".into(),
        late: false,
    });
    record_attachment(&s.checkpoint, &claim_uid, "ens1f0", None, Some(attached)).await;
    files
        .refresh_metadata(&s.checkpoint.claim(&claim_uid).unwrap())
        .await
        .unwrap();
    assert_eq!(
        read_json(&metadata_path),
        expected_metadata(
            2,
            Some(json!({"interfaceName": "net1", "ips": ["192.0.2.10/24"],
                        "hardwareAddress": "02:00:00:00:00:0a"}))
        )
    );

    // Unprepare (after the NIC is back) removes both.
    record_attachment(&s.checkpoint, &claim_uid, "ens1f0", None, None).await;
    let results = driver.unprepare(vec![claim_ref(&claim)]).await;
    assert!(results[&claim_uid].is_ok(), "{results:?}");
    assert!(!spec_path.exists());
    assert!(!metadata_path.parent().unwrap().parent().unwrap().exists());
    // Again: nothing left, nothing to fail on.
    let results = driver.unprepare(vec![claim_ref(&claim)]).await;
    assert!(results[&claim_uid].is_ok(), "{results:?}");
}

#[tokio::test]
async fn a_claim_that_is_not_recorded_leaves_no_cdi_files() {
    let s = setup().await;
    let (driver, _files) = cdi_driver(&s);
    let first = allocated_claim(&s.claims, "first", &[("nic", "ens1f0")], vec![], &["p1"]).await;
    prepare_one(&driver, &first).await.unwrap();
    // The same NIC again: refused at the record, after its files were written.
    let second = allocated_claim(&s.claims, "second", &[("nic", "ens1f0")], vec![], &["p2"]).await;
    let error = prepare_one(&driver, &second).await.unwrap_err().to_string();
    assert!(
        error.contains("device ens1f0 (pool node-a) is already prepared for claim default/first"),
        "{error}"
    );
    let cdi = s.dir.path().join("cdi");
    let names: Vec<String> = std::fs::read_dir(&cdi)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [format!("netclaim.dev-net_{}.json", uid(&first))]);
    let metadata = s
        .dir
        .path()
        .join("plugins/netclaim.dev/dra-device-metadata");
    assert!(!metadata.join(uid(&second)).exists());
    assert!(metadata.join(uid(&first)).exists());
}

#[tokio::test]
async fn a_shared_allocation_records_its_consumed_capacity_and_names_its_share() {
    let s = setup_with(ApiServerOptions::kubernetes(36)).await;
    let (driver, _files) = cdi_driver(&s);
    s.host.add_shared("eth4", "0000:03:00.0", 4);
    let claim = allocated_shared_claim(
        &s.claims,
        "child",
        &[("nic", "eth4", &share(7))],
        vec![macvlan_config(&[], "net1")],
        "pod-7",
    )
    .await;
    let devices = prepare_one(&driver, &claim).await.unwrap();
    assert_eq!(
        devices[0].cdi_device_ids,
        [format!(
            "netclaim.dev/net={}-eth4-{}",
            uid(&claim),
            share(7)
        )]
    );
    let stored = s.checkpoint.on_disk().unwrap();
    let nic = &stored[&uid(&claim)].nics[0];
    assert_eq!(
        nic.consumed_capacity,
        BTreeMap::from([("netclaim.dev/children".to_string(), "1".to_string())])
    );
    // A CNI child gets no RDMA devices of its parent.
    assert_eq!(nic.rdma, None);
}

// ---- the tenant boundary: what a claim may choose of what runs on the node ------------

/// A `netclaim.dev` config entry from `source` for all requests with the `cni` section
/// `cni` (and `interface.name: net1` for a claim).
fn cni_entry(source: &str, cni: Value) -> Value {
    let mut parameters =
        json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "cni": cni});
    if source == "FromClaim" {
        parameters["interface"] = json!({"name": "net1"});
    }
    opaque(source, &[], "netclaim.dev", parameters)
}

/// The stored CNI list of the claim's first device.
fn stored_list(s: &Setup, claim: &ResourceClaim) -> Value {
    s.checkpoint.on_disk().unwrap()[&uid(claim)].nics[0]
        .cni
        .clone()
        .unwrap()
}

#[tokio::test]
async fn a_claims_own_conflist_is_refused_unless_its_class_allows_it() {
    let s = setup().await;
    let mine = json!({"cniVersion": "1.0.0", "name": "mine",
                      "plugins": [{"type": "macvlan", "mode": "bridge"}]});
    // A class without config (or with static config only) grants no network.
    let claim = allocated_claim(
        &s.claims,
        "own-net",
        &[("nic", "eth1")],
        vec![cni_entry("FromClaim", mine.clone())],
        &["pod-1"],
    )
    .await;
    let error = prepare_one(&s.driver, &claim)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "claim default/own-net: device eth1 (pool node-a, request nic): claim config[0]: \
         cni.plugins: claims may not bring their own network this way under this DeviceClass \
         (it lets claims bring: none); an admin allows it with cni.claimMayBring.inline in \
         the class config"
    );
    assert!(s.checkpoint.on_disk().unwrap().is_empty());
    // With the grant the same claim is prepared, the device in `master`.
    let granted = allocated_claim(
        &s.claims,
        "own-net-granted",
        &[("nic", "eth1")],
        vec![
            cni_entry("FromClass", json!({"claimMayBring": {"inline": true}})),
            cni_entry("FromClaim", mine),
        ],
        &["pod-1"],
    )
    .await;
    prepare_one(&s.driver, &granted).await.unwrap();
    assert_eq!(stored_list(&s, &granted)["plugins"][0]["master"], "eth1");
}

#[tokio::test]
async fn plugins_outside_the_allowlist_fail_the_claim_first_chained_and_as_ipam() {
    let s = setup().await;
    // The allowlist binds the admin's class networks too: it is the admin's own flag.
    let cases = [
        (
            "bridge-first",
            json!([{"type": "bridge", "bridge": "cni0"}]),
            "cni.plugins[0].type: \"bridge\" is not an allowed CNI plugin on this node \
             (allowed: host-device, host-local, ipvlan, macvlan, static; an admin allows \
             more with netclaim run --cni-allowed-plugins)",
        ),
        (
            "portmap-chained",
            json!([{"type": "macvlan"}, {"type": "portmap", "capabilities": {"portMappings": true}}]),
            "cni.plugins[1].type: \"portmap\" is not an allowed CNI plugin",
        ),
        (
            "dhcp-ipam",
            json!([{"type": "macvlan", "ipam": {"type": "dhcp"}}]),
            "cni.plugins[0].ipam.type: \"dhcp\" is not an allowed CNI plugin",
        ),
        (
            "host-device-chained",
            json!([{"type": "macvlan"}, {"type": "host-device", "device": "eth0"}]),
            "cni.plugins[1].type: \"host-device\" takes a host device, and only a list's \
             first plugin is given the allocated one",
        ),
    ];
    for (name, plugins, expected) in cases {
        let claim = allocated_claim(
            &s.claims,
            name,
            &[("nic", "eth1")],
            vec![cni_entry(
                "FromClass",
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": plugins}),
            )],
            &["pod-1"],
        )
        .await;
        let error = prepare_one(&s.driver, &claim)
            .await
            .unwrap_err()
            .to_string();
        let wanted = format!("claim default/{name}: class config[0]: {expected}");
        assert!(error.starts_with(&wanted), "{error}\nwanted {wanted}");
    }
    // An admin who lists the plugin gets it.
    let driver = NetclaimDriver::new(s.checkpoint.clone(), s.host.clone(), s.detacher.clone())
        .with_allowed_plugins(PluginAllowlist::default_and(["dhcp"]).unwrap());
    let claim = allocated_claim(
        &s.claims,
        "dhcp-allowed",
        &[("nic", "eth2")],
        vec![cni_entry(
            "FromClass",
            json!({"cniVersion": "1.0.0", "name": "n",
                   "plugins": [{"type": "macvlan", "ipam": {"type": "dhcp"}}]}),
        )],
        &["pod-1"],
    )
    .await;
    prepare_one(&driver, &claim).await.unwrap();
    assert!(s.checkpoint.on_disk().unwrap().contains_key(&uid(&claim)));
}

#[tokio::test]
async fn a_nad_of_another_namespace_needs_the_class_to_list_it() {
    let s = setup().await;
    let driver = nad_driver(&s);
    create_nad(&s, "team-b", "macnet", MACVLAN_CONFLIST).await;
    let claim = allocated_claim(
        &s.claims,
        "nad-elsewhere",
        &[("nic", "eth1")],
        vec![nad_grant(&["team-c"]), nad_config(Some("team-b"), "macnet")],
        &["pod-1"],
    )
    .await;
    let error = prepare_one(&driver, &claim).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "claim default/nad-elsewhere: claim config[0] (requests [nic]): \
         cni.networkAttachmentDefinition.namespace: \"team-b\" is not the claim's namespace \
         (default), and the DeviceClass lets claims name NetworkAttachmentDefinitions only \
         in: the claim's own, team-c (an admin adds namespaces with \
         cni.claimMayBring.networkAttachmentDefinition.otherNamespaces)"
    );
    // "*" lets claims name any namespace's.
    let anywhere = allocated_claim(
        &s.claims,
        "nad-anywhere",
        &[("nic", "eth1")],
        vec![nad_grant(&["*"]), nad_config(Some("team-b"), "macnet")],
        &["pod-1"],
    )
    .await;
    prepare_one(&driver, &anywhere).await.unwrap();
    assert_eq!(stored_list(&s, &anywhere)["plugins"][0]["master"], "eth1");
}

#[tokio::test]
async fn oversized_or_overlong_nads_are_refused() {
    let s = setup().await;
    let driver = nad_driver(&s);
    let padding = " ".repeat(10 * 1024);
    create_nad(
        &s,
        NS,
        "huge",
        &format!(r#"{{"cniVersion": "1.0.0", "name": "n", "type": "macvlan"}}{padding}"#),
    )
    .await;
    let nine: Vec<&str> = vec![r#"{"type": "static"}"#; 9];
    create_nad(
        &s,
        NS,
        "long",
        &format!(
            r#"{{"cniVersion": "1.0.0", "name": "n", "plugins": [{}]}}"#,
            nine.join(",")
        ),
    )
    .await;
    for (nad, expected) in [
        (
            "huge",
            "spec.config: is 10295 bytes; netclaim takes a network of at most 10240 bytes",
        ),
        (
            "long",
            "spec.config: plugins: has 9 plugins; a network has at most 8",
        ),
    ] {
        let claim = allocated_claim(
            &s.claims,
            &format!("nad-{nad}"),
            &[("nic", "eth1")],
            vec![nad_grant(&[]), nad_config(None, nad)],
            &["pod-1"],
        )
        .await;
        let error = prepare_one(&driver, &claim).await.unwrap_err().to_string();
        let wanted = format!(
            "claim default/nad-{nad}: claim config[0] (requests [nic]): \
             cni.networkAttachmentDefinition: default/{nad}: {expected}"
        );
        assert!(error.starts_with(&wanted), "{error}\nwanted {wanted}");
    }
    assert!(s.checkpoint.on_disk().unwrap().is_empty());
}

#[tokio::test]
async fn what_the_claims_side_wrote_may_not_name_node_paths_devices_or_runtime_keys() {
    let s = setup().await;
    let driver = nad_driver(&s);
    let leased = r#"{"cniVersion": "1.0.0", "name": "leased", "plugins": [
        {"type": "macvlan", "master": "placeholder",
         "ipam": {"type": "host-local", "dataDir": "/etc/cron.d",
                  "ranges": [[{"subnet": "192.0.2.0/24"}]]}}]}"#;
    // In the claim's own namespace the app team writes the NAD: it is the claim's side.
    create_nad(&s, NS, "leased", leased).await;
    let claim = allocated_claim(
        &s.claims,
        "tenant-datadir",
        &[("nic", "eth1")],
        vec![nad_grant(&[]), nad_config(None, "leased")],
        &["pod-1"],
    )
    .await;
    let error = prepare_one(&driver, &claim).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "claim default/tenant-datadir: claim config[0] (requests [nic]): \
         cni.networkAttachmentDefinition: default/leased: spec.config: \
         plugins[0].ipam.dataDir: names a file, directory or socket on the node, which a \
         claim may not choose (the plugin's default applies)"
    );
    // So is a NAD a class names without a namespace: it resolves in the claim's namespace.
    let class_ref = allocated_claim(
        &s.claims,
        "class-ref-own-namespace",
        &[("nic", "eth1")],
        vec![cni_entry(
            "FromClass",
            json!({"networkAttachmentDefinition": {"name": "leased"}}),
        )],
        &["pod-1"],
    )
    .await;
    let error = prepare_one(&driver, &class_ref)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("class config[0]: cni.networkAttachmentDefinition: default/leased: spec.config: plugins[0].ipam.dataDir: names a file"),
        "{error}"
    );
    // A NAD the class names in the admins' namespace is the admin's: it may.
    create_nad(&s, "net-admin", "leased", leased).await;
    let admin = allocated_claim(
        &s.claims,
        "admin-datadir",
        &[("nic", "eth1")],
        vec![cni_entry(
            "FromClass",
            json!({"networkAttachmentDefinition": {"namespace": "net-admin", "name": "leased"}}),
        )],
        &["pod-1"],
    )
    .await;
    prepare_one(&driver, &admin).await.unwrap();
    let list = stored_list(&s, &admin);
    assert_eq!(list["plugins"][0]["ipam"]["dataDir"], "/etc/cron.d");
    assert_eq!(list["plugins"][0]["master"], "eth1");

    // An inline network a claim may bring: a host device further down, the runtime's
    // keys and paths are refused, each named.
    let claim = allocated_claim(
        &s.claims,
        "tenant-inline",
        &[("nic", "eth2")],
        vec![
            cni_entry("FromClass", json!({"claimMayBring": {"inline": true}})),
            cni_entry(
                "FromClaim",
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
                    {"type": "macvlan", "runtimeConfig": {"mac": "02:00:00:00:00:09"}},
                    {"type": "static", "device": "eth0", "resolvConf": "/etc/shadow"}]}),
            ),
        ],
        &["pod-2"],
    )
    .await;
    let error = prepare_one(&driver, &claim).await.unwrap_err().to_string();
    for field in [
        "claim config[0]: cni.plugins[0].runtimeConfig: is the container runtime's to fill",
        "claim config[0]: cni.plugins[1].device: picks a host device",
        "claim config[0]: cni.plugins[1].resolvConf: names a file",
    ] {
        assert!(error.contains(field), "want {field:?} in {error}");
    }
}

#[tokio::test]
async fn a_plugin_override_of_an_unlisted_field_is_refused_and_a_listed_one_applied() {
    let s = setup().await;
    let class = cni_entry(
        "FromClass",
        json!({"cniVersion": "1.0.0", "name": "macnet-static",
               "plugins": [{"type": "macvlan", "mode": "bridge", "ipam": {"type": "static"}}],
               "claimMayOverride": ["interfaceName", "plugins[0].ipam.addresses"]}),
    );
    let claim = allocated_claim(
        &s.claims,
        "override-mode",
        &[("nic", "eth1")],
        vec![
            class.clone(),
            cni_entry(
                "FromClaim",
                json!({"pluginOverrides": {"plugins[0].mode": "passthru"}}),
            ),
        ],
        &["pod-1"],
    )
    .await;
    let error = prepare_one(&s.driver, &claim)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "claim default/override-mode: device eth1 (pool node-a, request nic): claim \
         config[0]: cni.pluginOverrides[\"plugins[0].mode\"]: the DeviceClass lets claims \
         override only [interfaceName, plugins[0].ipam.addresses]"
    );
    let claim = allocated_claim(
        &s.claims,
        "override-address",
        &[("nic", "eth1")],
        vec![
            class,
            cni_entry(
                "FromClaim",
                json!({"pluginOverrides": {
                    "plugins[0].ipam.addresses": [{"address": "192.0.2.30/24"}]}}),
            ),
        ],
        &["pod-1"],
    )
    .await;
    prepare_one(&s.driver, &claim).await.unwrap();
    let list = stored_list(&s, &claim);
    assert_eq!(
        list["plugins"][0]["ipam"],
        json!({"type": "static", "addresses": [{"address": "192.0.2.30/24"}]})
    );
    assert_eq!(list["plugins"][0]["mode"], "bridge");
}

#[tokio::test]
async fn host_device_takes_only_the_allocated_device_and_never_a_shared_parent() {
    let s = setup_with(ApiServerOptions::kubernetes(36)).await;
    let moving = |requests: &[&str]| {
        opaque(
            "FromClass",
            requests,
            "netclaim.dev",
            json!({"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig",
                   "interface": {"name": "net1"},
                   "cni": {"cniVersion": "1.0.0", "name": "moved",
                           "plugins": [{"type": "host-device", "device": "eth0"}]}}),
        )
    };
    // The class's `device: eth0` is overwritten with the allocated device.
    let claim = allocated_claim(
        &s.claims,
        "moved",
        &[("nic", "eth2")],
        vec![moving(&[])],
        &["pod-1"],
    )
    .await;
    prepare_one(&s.driver, &claim).await.unwrap();
    assert_eq!(stored_list(&s, &claim)["plugins"][0]["device"], "eth2");
    // A NIC host-device moves is the pod's: unlike a macvlan parent, it is not shared.
    let second = allocated_claim(
        &s.claims,
        "moved-again",
        &[("nic", "eth2")],
        vec![moving(&[])],
        &["pod-3"],
    )
    .await;
    let error = prepare_one(&s.driver, &second)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "claim default/moved-again: device eth2 (pool node-a) is already prepared for claim \
         default/moved"
    );
    // Moving a shared parent would cut its other children off.
    s.host.add_shared("eth4", "0000:03:00.0", 4);
    let shared = allocated_shared_claim(
        &s.claims,
        "moved-shared",
        &[("nic", "eth4", &share(1))],
        vec![moving(&[])],
        "pod-2",
    )
    .await;
    let error = prepare_one(&s.driver, &shared)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "claim default/moved-shared: device eth4 (pool node-a, request nic): host NIC \
             eth4 is a shared parent (up to 4 CNI children for other claims), and host-device \
             would move it into this pod"
        ),
        "{error}"
    );
}
