//! The `kubeletplugin` library against the kubelet stand-in (real gRPC over unix sockets)
//! and the API server stand-in (real kube client over HTTP).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kubeletplugin::{
    ClaimError, ClaimRef, DeviceHealth, DraDriver, HealthReporter, HealthStatus, Plugin,
    PluginBuilder, PluginHandle, PrepareResult, PreparedDevice, RegistrationStatus,
};
use netclaim_test::apiserver::ApiServer;
use netclaim_test::kubelet::{
    DraApiVersion, DraClient, HealthApiVersion, KubeletStandIn, ReportedHealth, WireHealthStatus,
};
use tokio::sync::{Notify, watch};

const DRIVER: &str = "test.netclaim.dev";
const NODE: &str = "node-1";
const NAMESPACE: &str = "default";
/// Generous bound for anything that should happen promptly; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// A driver that records what it is given and answers as told.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Prepare(Vec<String>),
    Unprepare(Vec<String>),
}

#[derive(Default)]
struct TestDriver {
    /// Claim names whose preparation fails.
    fail: BTreeSet<String>,
    /// Claim names left out of the driver's answer.
    omit: BTreeSet<String>,
    /// Share id put on every prepared device.
    share_id: Option<String>,
    /// When set, each call waits (bounded by the duration) until this many calls have
    /// been inside the driver at once.
    rendezvous: Option<(usize, Duration)>,
    /// When set, `prepare` signals `entered` and waits for `release`.
    gate: Option<Arc<Gate>>,
    calls: Mutex<Vec<Call>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// The highest concurrency so far: monotonic, so a waiter cannot miss it when the other
    /// call leaves before the waiter looks.
    max_in_flight_seen: watch::Sender<usize>,
}

#[derive(Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

impl TestDriver {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    async fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let max = self.max_in_flight.fetch_max(now, Ordering::SeqCst).max(now);
        self.max_in_flight_seen.send_replace(max);
        if let Some((target, patience)) = self.rendezvous {
            let mut in_flight = self.max_in_flight_seen.subscribe();
            let _ = tokio::time::timeout(patience, in_flight.wait_for(|n| *n >= target)).await;
        }
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl DraDriver for TestDriver {
    async fn prepare(&self, claims: Vec<ResourceClaim>) -> BTreeMap<String, PrepareResult> {
        self.enter().await;
        let names = claims
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        self.calls.lock().unwrap().push(Call::Prepare(names));
        if let Some(gate) = &self.gate {
            gate.entered.notify_one();
            gate.release.notified().await;
        }
        let mut results = BTreeMap::new();
        for claim in claims {
            let name = claim.metadata.name.unwrap();
            let uid = claim.metadata.uid.unwrap();
            if self.omit.contains(&name) {
                continue;
            }
            let result = if self.fail.contains(&name) {
                Err(ClaimError::new(format!("injected failure for {name}")))
            } else {
                Ok(vec![PreparedDevice {
                    requests: vec!["nic".into()],
                    pool_name: NODE.into(),
                    device_name: format!("dev-{name}"),
                    cdi_device_ids: Vec::new(),
                    share_id: self.share_id.clone(),
                }])
            };
            results.insert(uid, result);
        }
        self.leave();
        results
    }

    async fn unprepare(&self, claims: Vec<ClaimRef>) -> BTreeMap<String, Result<(), ClaimError>> {
        self.enter().await;
        let names = claims.iter().map(|c| c.name.clone()).collect();
        self.calls.lock().unwrap().push(Call::Unprepare(names));
        self.leave();
        claims.into_iter().map(|c| (c.uid, Ok(()))).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Fixture: an API server, a temporary kubelet directory tree, a kubelet.

struct Node {
    api: ApiServer,
    dir: tempfile::TempDir,
    kubelet: KubeletStandIn,
}

impl Node {
    async fn new() -> Node {
        let api = ApiServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubelet = KubeletStandIn::new(dir.path().join("plugins_registry"));
        Node { api, dir, kubelet }
    }

    fn registrar_dir(&self) -> PathBuf {
        self.dir.path().join("plugins_registry")
    }

    fn plugin_data_dir(&self) -> PathBuf {
        self.dir.path().join("plugins").join(DRIVER)
    }

    fn builder(&self) -> PluginBuilder {
        Plugin::builder(DRIVER, NODE)
            .kube_client(self.api.client())
            .registrar_dir(self.registrar_dir())
            .plugin_data_dir(self.plugin_data_dir())
    }

    /// Starts a plugin for `driver` and registers it with the kubelet.
    async fn start(&self, driver: Arc<TestDriver>) -> (PluginHandle, DraClient) {
        let plugin = self.builder().start(driver).await.unwrap();
        let client = self
            .kubelet
            .wait_for_plugin(DRIVER, PATIENCE)
            .await
            .unwrap();
        (plugin, client)
    }

    fn claims(&self) -> Api<ResourceClaim> {
        Api::namespaced(self.api.client(), NAMESPACE)
    }

    /// Creates a claim as a user would; `allocated` also writes `status.allocation` as the
    /// scheduler would. Returns the reference the kubelet would send.
    async fn create_claim(&self, name: &str, allocated: bool) -> ClaimRef {
        let claim: ResourceClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": { "name": name, "namespace": NAMESPACE },
            "spec": { "devices": { "requests": [
                { "name": "nic", "exactly": { "deviceClassName": "netclaim" } }
            ] } }
        }))
        .unwrap();
        let created = self
            .claims()
            .create(&PostParams::default(), &claim)
            .await
            .unwrap();
        if allocated {
            let allocation = serde_json::json!({ "status": { "allocation": { "devices": {
                "results": [
                    { "request": "nic", "driver": DRIVER, "pool": NODE, "device": "eth1" }
                ]
            } } } });
            self.claims()
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&allocation))
                .await
                .unwrap();
        }
        ClaimRef {
            namespace: NAMESPACE.into(),
            name: name.into(),
            uid: created.metadata.uid.unwrap(),
        }
    }
}

fn absent_claim(name: &str) -> ClaimRef {
    ClaimRef {
        namespace: NAMESPACE.into(),
        name: name.into(),
        uid: format!("uid-of-{name}"),
    }
}

async fn wait_for_status(plugin: &PluginHandle) -> RegistrationStatus {
    let mut status = plugin.registration_status();
    let seen = tokio::time::timeout(PATIENCE, status.wait_for(Option::is_some))
        .await
        .expect("no NotifyRegistrationStatus within the patience")
        .unwrap();
    seen.clone().unwrap()
}

/// Waits until `path` no longer exists (polling; the bound only matters on failure).
async fn wait_until_gone(path: &Path) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still exists",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------------------
// Registration

#[tokio::test]
async fn registration_handshake_advertises_dra_endpoint_and_versions() {
    let node = Node::new().await;
    let plugin = node
        .builder()
        .start(Arc::new(TestDriver::default()))
        .await
        .unwrap();
    assert_eq!(plugin.registration_status().borrow().clone(), None);

    let found = node.kubelet.discover(DRIVER, PATIENCE).await.unwrap();
    assert_eq!(
        found.socket,
        node.registrar_dir().join(format!("{DRIVER}-reg.sock"))
    );
    assert_eq!(found.info.r#type, "DRAPlugin");
    assert_eq!(found.info.name, DRIVER);
    assert_eq!(
        Path::new(&found.info.endpoint),
        node.plugin_data_dir().join("dra.sock")
    );
    assert_eq!(
        found.info.endpoint,
        plugin.dra_socket_path().to_str().unwrap()
    );
    assert_eq!(
        found.info.supported_versions,
        ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    );

    let client = found.accept().await.unwrap();
    assert_eq!(client.negotiated_version(), DraApiVersion::V1);
    assert_eq!(
        wait_for_status(&plugin).await,
        RegistrationStatus {
            registered: true,
            error: None
        }
    );
    plugin.shutdown().await.unwrap();
}

#[tokio::test]
async fn rejected_registration_is_observable_with_the_kubelets_reason() {
    let node = Node::new().await;
    let plugin = node
        .builder()
        .start(Arc::new(TestDriver::default()))
        .await
        .unwrap();
    let found = node.kubelet.discover(DRIVER, PATIENCE).await.unwrap();
    found
        .reject("driver name already registered by another plugin")
        .await
        .unwrap();
    assert_eq!(
        wait_for_status(&plugin).await,
        RegistrationStatus {
            registered: false,
            error: Some("driver name already registered by another plugin".into())
        }
    );
    plugin.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_plugin_without_a_kube_client_is_refused() {
    let node = Node::new().await;
    let refused = Plugin::builder(DRIVER, NODE)
        .registrar_dir(node.registrar_dir())
        .plugin_data_dir(node.plugin_data_dir())
        .start(Arc::new(TestDriver::default()))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("kube client"), "{refused}");
    assert!(
        !node
            .registrar_dir()
            .join(format!("{DRIVER}-reg.sock"))
            .exists()
    );
}

// ---------------------------------------------------------------------------------------
// Prepare and unprepare

#[tokio::test]
async fn prepare_and_unprepare_work_in_both_api_versions() {
    let node = Node::new().await;
    let driver = Arc::new(TestDriver::default());
    let (plugin, kubelet) = node.start(driver.clone()).await;

    for (version, name) in [
        (DraApiVersion::V1, "claim-v1"),
        (DraApiVersion::V1beta1, "claim-v1beta1"),
    ] {
        let claim = node.create_claim(name, true).await;
        let prepared = kubelet
            .prepare(version, std::slice::from_ref(&claim))
            .await
            .unwrap();
        let outcome = &prepared[&claim.uid];
        assert_eq!(outcome.error, "", "{version:?}");
        assert_eq!(outcome.devices.len(), 1);
        assert_eq!(outcome.devices[0].device_name, format!("dev-{name}"));
        assert_eq!(outcome.devices[0].pool_name, NODE);
        assert_eq!(outcome.devices[0].request_names, ["nic"]);

        let released = kubelet
            .unprepare(version, std::slice::from_ref(&claim))
            .await
            .unwrap();
        assert_eq!(
            released,
            BTreeMap::from([(claim.uid.clone(), String::new())])
        );
    }
    assert_eq!(
        driver.calls(),
        [
            Call::Prepare(vec!["claim-v1".into()]),
            Call::Unprepare(vec!["claim-v1".into()]),
            Call::Prepare(vec!["claim-v1beta1".into()]),
            Call::Unprepare(vec!["claim-v1beta1".into()]),
        ]
    );
    plugin.shutdown().await.unwrap();
}

#[tokio::test]
async fn per_claim_failures_leave_the_rest_of_the_batch_prepared() {
    let node = Node::new().await;
    let driver = Arc::new(TestDriver {
        fail: BTreeSet::from(["refused".to_string()]),
        omit: BTreeSet::from(["forgotten".to_string()]),
        ..TestDriver::default()
    });
    let (plugin, kubelet) = node.start(driver.clone()).await;

    let good = node.create_claim("good", true).await;
    let missing = absent_claim("missing");
    let mut recreated = node.create_claim("recreated", true).await;
    recreated.uid = "uid-before-recreation".into();
    let unallocated = node.create_claim("unallocated", false).await;
    let refused = node.create_claim("refused", true).await;
    let forgotten = node.create_claim("forgotten", true).await;
    let batch = [
        good.clone(),
        missing.clone(),
        recreated.clone(),
        unallocated.clone(),
        refused.clone(),
        forgotten.clone(),
    ];

    for version in DraApiVersion::ALL {
        let response = kubelet.prepare(version, &batch).await.unwrap();
        assert_eq!(response.len(), batch.len(), "every claim gets an answer");
        assert_eq!(response[&good.uid].error, "");
        assert_eq!(response[&good.uid].devices.len(), 1);
        let error = |claim: &ClaimRef| response[&claim.uid].error.clone();
        assert!(
            error(&missing).contains("default/missing") && error(&missing).contains("not found")
        );
        assert!(
            error(&recreated).contains("default/recreated")
                && error(&recreated).contains("re-created")
        );
        assert!(
            error(&unallocated).contains("status.allocation"),
            "{}",
            error(&unallocated)
        );
        assert!(error(&refused).contains("injected failure for refused"));
        assert!(
            error(&forgotten).contains("default/forgotten")
                && error(&forgotten).contains("no prepare result")
        );
        for failed in [&missing, &recreated, &unallocated, &refused, &forgotten] {
            assert!(response[&failed.uid].devices.is_empty());
        }
    }
    // Claims that failed the library's checks never reach the driver; the rest arrive in
    // one call per kubelet call.
    let one_call = Call::Prepare(vec!["good".into(), "refused".into(), "forgotten".into()]);
    assert_eq!(driver.calls(), [one_call.clone(), one_call]);
    plugin.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_server_errors_become_claim_errors() {
    let node = Node::new().await;
    let (plugin, kubelet) = node.start(Arc::new(TestDriver::default())).await;
    let claim = node.create_claim("flaky", true).await;
    // kube's client retries 503 by itself: one of them is invisible to the kubelet.
    node.api.faults().fail_next("GET", "resourceclaims", 1, 503);
    let absorbed = kubelet
        .prepare(DraApiVersion::V1, std::slice::from_ref(&claim))
        .await
        .unwrap();
    assert_eq!(absorbed[&claim.uid].error, "");
    assert_eq!(node.api.faults().request_count("GET", "resourceclaims"), 2);

    // A 500 is not retried: it becomes the claim's error.
    node.api.faults().fail_next("GET", "resourceclaims", 1, 500);
    let failed = kubelet
        .prepare(DraApiVersion::V1, std::slice::from_ref(&claim))
        .await
        .unwrap();
    let error = &failed[&claim.uid].error;
    assert!(
        error.contains("default/flaky") && error.contains("fetching"),
        "{error}"
    );
    // The kubelet retries the claim; the next attempt succeeds.
    let retried = kubelet
        .prepare(DraApiVersion::V1, std::slice::from_ref(&claim))
        .await
        .unwrap();
    assert_eq!(retried[&claim.uid].error, "");
    plugin.shutdown().await.unwrap();
}

#[tokio::test]
async fn share_id_is_sent_in_v1_and_absent_in_v1beta1() {
    let node = Node::new().await;
    let driver = Arc::new(TestDriver {
        share_id: Some("7f3c0e52-1c9b-4d8e-9d3a-3d0c6f1b2a90".into()),
        ..TestDriver::default()
    });
    let (plugin, kubelet) = node.start(driver).await;
    let claim = node.create_claim("shared", true).await;

    let v1 = kubelet
        .prepare(DraApiVersion::V1, std::slice::from_ref(&claim))
        .await
        .unwrap();
    assert_eq!(
        v1[&claim.uid].devices[0].share_id.as_deref(),
        Some("7f3c0e52-1c9b-4d8e-9d3a-3d0c6f1b2a90")
    );
    let v1beta1 = kubelet
        .prepare(DraApiVersion::V1beta1, std::slice::from_ref(&claim))
        .await
        .unwrap();
    assert_eq!(v1beta1[&claim.uid].devices[0].share_id, None);
    // The same v1beta1 response bytes, read as v1, carry no field 5 either.
    let raw = kubelet
        .v1beta1()
        .node_prepare_resources(
            kubeletplugin::proto::dra_v1beta1::NodePrepareResourcesRequest {
                claims: vec![kubeletplugin::proto::dra_v1beta1::Claim {
                    namespace: claim.namespace.clone(),
                    uid: claim.uid.clone(),
                    name: claim.name.clone(),
                }],
            },
        )
        .await
        .unwrap()
        .into_inner();
    let bytes = prost::Message::encode_to_vec(&raw);
    let as_v1: kubeletplugin::proto::dra_v1::NodePrepareResourcesResponse =
        prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(as_v1.claims[&claim.uid].devices[0].share_id, None);
    plugin.shutdown().await.unwrap();
}

#[tokio::test]
async fn unprepare_reaches_the_driver_after_the_claim_is_deleted() {
    let node = Node::new().await;
    let driver = Arc::new(TestDriver::default());
    let (plugin, kubelet) = node.start(driver.clone()).await;
    let claim = node.create_claim("short-lived", true).await;
    let prepared = kubelet
        .prepare(DraApiVersion::V1, std::slice::from_ref(&claim))
        .await
        .unwrap();
    assert_eq!(prepared[&claim.uid].error, "");

    node.claims()
        .delete("short-lived", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        node.claims()
            .get_opt("short-lived")
            .await
            .unwrap()
            .is_none()
    );

    let released = kubelet
        .unprepare(DraApiVersion::V1, std::slice::from_ref(&claim))
        .await
        .unwrap();
    assert_eq!(
        released,
        BTreeMap::from([(claim.uid.clone(), String::new())])
    );
    assert_eq!(
        driver.calls().last(),
        Some(&Call::Unprepare(vec!["short-lived".into()]))
    );
    plugin.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Serialization

/// Sends two concurrent prepare calls (one per API version) with serialization turned off
/// and returns the driver's highest concurrency. Each call waits inside the driver (up to
/// the patience, reached only when the test fails) until both are inside.
///
/// That serializing (the default) keeps the second call out of the driver is shown
/// without timing in the library's own tests (`kubeletplugin/src/dra.rs`): they poll two
/// calls by hand, so the second has provably run as far as it can when it is checked.
async fn concurrency_without_serialization() -> usize {
    let node = Node::new().await;
    let driver = Arc::new(TestDriver {
        rendezvous: Some((2, PATIENCE)),
        ..TestDriver::default()
    });
    let plugin = node
        .builder()
        .serialize(false)
        .start(driver.clone())
        .await
        .unwrap();
    let kubelet = node
        .kubelet
        .wait_for_plugin(DRIVER, PATIENCE)
        .await
        .unwrap();
    let a = node.create_claim("a", true).await;
    let b = node.create_claim("b", true).await;

    let (first, second) = tokio::join!(
        kubelet.prepare(DraApiVersion::V1, std::slice::from_ref(&a)),
        kubelet.prepare(DraApiVersion::V1beta1, std::slice::from_ref(&b)),
    );
    assert_eq!(first.unwrap()[&a.uid].error, "");
    assert_eq!(second.unwrap()[&b.uid].error, "");
    plugin.shutdown().await.unwrap();
    driver.max_in_flight.load(Ordering::SeqCst)
}

#[tokio::test]
async fn driver_calls_overlap_when_serialization_is_off() {
    // The rendezvous completes as soon as both calls are inside the driver.
    assert_eq!(concurrency_without_serialization().await, 2);
}

// ---------------------------------------------------------------------------------------
// Sockets

#[tokio::test]
async fn sockets_and_directories_are_closed_to_others() {
    let node = Node::new().await;
    let plugin = node
        .builder()
        .start(Arc::new(TestDriver::default()))
        .await
        .unwrap();
    for socket in [plugin.registration_socket_path(), plugin.dra_socket_path()] {
        let meta = std::fs::metadata(socket).unwrap();
        assert!(meta.file_type().is_socket(), "{}", socket.display());
        assert_eq!(mode(socket), 0o660, "{}", socket.display());
    }
    for dir in [
        node.registrar_dir(),
        node.plugin_data_dir(),
        node.dir.path().join("plugins"),
    ] {
        let dir_mode = mode(&dir);
        assert_eq!(dir_mode & 0o027, 0, "{} is {dir_mode:o}", dir.display());
    }
    assert_eq!(mode(&node.plugin_data_dir()), 0o750);
    // Nothing but the two sockets is left behind (no temporary names).
    let entries = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        entries(&node.registrar_dir()),
        [format!("{DRIVER}-reg.sock")]
    );
    assert_eq!(entries(&node.plugin_data_dir()), ["dra.sock"]);
    plugin.shutdown().await.unwrap();
}

#[tokio::test]
async fn stale_sockets_are_replaced_at_start() {
    let node = Node::new().await;
    std::fs::create_dir_all(node.registrar_dir()).unwrap();
    std::fs::create_dir_all(node.plugin_data_dir()).unwrap();
    let stale_registration = node.registrar_dir().join(format!("{DRIVER}-reg.sock"));
    let stale_dra = node.plugin_data_dir().join("dra.sock");
    // A crashed plugin leaves socket files nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&stale_registration).unwrap());
    drop(std::os::unix::net::UnixListener::bind(&stale_dra).unwrap());
    let refused = std::os::unix::net::UnixStream::connect(&stale_dra).unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );

    let driver = Arc::new(TestDriver::default());
    let (plugin, kubelet) = node.start(driver).await;
    let claim = node.create_claim("after-restart", true).await;
    let prepared = kubelet
        .prepare(DraApiVersion::V1, std::slice::from_ref(&claim))
        .await
        .unwrap();
    assert_eq!(prepared[&claim.uid].error, "");
    plugin.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_regular_file_in_the_sockets_place_is_not_deleted() {
    let node = Node::new().await;
    std::fs::create_dir_all(node.plugin_data_dir()).unwrap();
    let squatter = node.plugin_data_dir().join("dra.sock");
    std::fs::write(&squatter, "not a socket").unwrap();
    let refused = node
        .builder()
        .start(Arc::new(TestDriver::default()))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("dra.sock"), "{refused}");
    assert_eq!(std::fs::read_to_string(&squatter).unwrap(), "not a socket");
}

#[tokio::test]
async fn rolling_update_instances_serve_side_by_side() {
    let node = Node::new().await;
    let old_driver = Arc::new(TestDriver::default());
    let new_driver = Arc::new(TestDriver::default());
    let old = node
        .builder()
        .rolling_update(Some("0000-old".into()))
        .start(old_driver.clone())
        .await
        .unwrap();
    let old_client = node
        .kubelet
        .wait_for_plugin(DRIVER, PATIENCE)
        .await
        .unwrap();
    let new = node
        .builder()
        .rolling_update(Some("1111-new".into()))
        .start(new_driver.clone())
        .await
        .unwrap();
    let new_client = node
        .kubelet
        .wait_for_plugin(DRIVER, PATIENCE)
        .await
        .unwrap();

    assert_eq!(
        old.registration_socket_path(),
        node.registrar_dir()
            .join(format!("{DRIVER}-0000-old-reg.sock"))
    );
    assert_eq!(
        old.dra_socket_path(),
        node.plugin_data_dir().join("dra-0000-old.sock")
    );
    assert_eq!(
        new.dra_socket_path(),
        node.plugin_data_dir().join("dra-1111-new.sock")
    );
    assert_eq!(old_client.endpoint(), old.dra_socket_path());
    assert_eq!(new_client.endpoint(), new.dra_socket_path());

    let claim = node.create_claim("during-update", true).await;
    let prepared = old_client
        .prepare(DraApiVersion::V1, std::slice::from_ref(&claim))
        .await
        .unwrap();
    assert_eq!(prepared[&claim.uid].error, "");
    assert_eq!(
        prepared[&claim.uid].devices[0].device_name,
        "dev-during-update"
    );
    old.shutdown().await.unwrap();
    assert!(
        new.dra_socket_path().exists(),
        "the old pod removed only its own sockets"
    );
    let released = new_client
        .unprepare(DraApiVersion::V1, std::slice::from_ref(&claim))
        .await
        .unwrap();
    assert_eq!(
        released,
        BTreeMap::from([(claim.uid.clone(), String::new())])
    );
    assert_eq!(
        old_driver.calls(),
        [Call::Prepare(vec!["during-update".into()])]
    );
    assert_eq!(
        new_driver.calls(),
        [Call::Unprepare(vec!["during-update".into()])]
    );
    new.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Shutdown

#[tokio::test]
async fn shutdown_removes_sockets_and_lets_the_in_flight_call_finish() {
    let node = Node::new().await;
    let gate = Arc::new(Gate::default());
    let driver = Arc::new(TestDriver {
        gate: Some(gate.clone()),
        ..TestDriver::default()
    });
    let (plugin, kubelet) = node.start(driver).await;
    let registration_socket = plugin.registration_socket_path().to_path_buf();
    let dra_socket = plugin.dra_socket_path().to_path_buf();
    let claim = node.create_claim("in-flight", true).await;

    let call = tokio::spawn({
        let kubelet = kubelet.clone();
        let claim = claim.clone();
        async move { kubelet.prepare(DraApiVersion::V1, &[claim]).await }
    });
    tokio::time::timeout(PATIENCE, gate.entered.notified())
        .await
        .unwrap();

    let stopping = tokio::spawn(plugin.shutdown());
    wait_until_gone(&registration_socket).await;
    wait_until_gone(&dra_socket).await;
    assert!(
        !stopping.is_finished(),
        "shutdown finished while a call was in flight"
    );
    let gone = tokio::net::UnixStream::connect(&dra_socket)
        .await
        .unwrap_err();
    assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");

    gate.release.notify_one();
    let prepared = tokio::time::timeout(PATIENCE, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(prepared[&claim.uid].error, "");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!registration_socket.exists() && !dra_socket.exists());
}

// ---------------------------------------------------------------------------------------
// Health

/// One health stream of `version`: the snapshot first, then every change, in the official
/// messages (decoded by the stand-in's own copy of the kubelet's protos); shutdown ends it
/// cleanly.
async fn health_stream_sends_the_snapshot_then_every_change(version: Option<HealthApiVersion>) {
    let node = Node::new().await;
    let reporter = HealthReporter::new();
    let mut healthy = DeviceHealth::new(NODE, "eth1", HealthStatus::Healthy);
    healthy.health_check_timeout = Some(Duration::from_secs(90));
    healthy.last_updated = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    reporter.report(vec![healthy]);
    let plugin = node
        .builder()
        .health(reporter.clone())
        .start(Arc::new(TestDriver::default()))
        .await
        .unwrap();
    let kubelet = node
        .kubelet
        .wait_for_plugin(DRIVER, PATIENCE)
        .await
        .unwrap();
    let mut stream = match version {
        // The kubelet's own pick.
        None => kubelet.watch_health().await.unwrap(),
        Some(version) => kubelet.watch_health_version(version).await.unwrap(),
    };
    assert_eq!(stream.version(), version.unwrap_or(HealthApiVersion::V1));

    let first = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first.devices,
        [ReportedHealth {
            pool_name: NODE.into(),
            device_name: "eth1".into(),
            health: WireHealthStatus::Healthy,
            last_updated_time: 1_800_000_000,
            health_check_timeout_seconds: 90,
            message: String::new(),
        }]
    );

    let mut broken = DeviceHealth::new(NODE, "eth1", HealthStatus::Unhealthy);
    broken.message = "carrier lost".into();
    reporter.report(vec![broken]);
    let second = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let eth1 = second.device("eth1").unwrap();
    assert_eq!(eth1.health, WireHealthStatus::Unhealthy);
    assert_eq!(eth1.message, "carrier lost");
    assert_eq!(
        eth1.health_check_timeout_seconds, 0,
        "unset: the kubelet's default"
    );

    // Shutdown ends the stream instead of waiting for it forever.
    tokio::time::timeout(PATIENCE, plugin.shutdown())
        .await
        .unwrap()
        .unwrap();
    // A clean end of stream (status OK), not a broken connection.
    let end = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn a_kubelet_that_knows_v1_picks_the_v1_health_stream() {
    health_stream_sends_the_snapshot_then_every_change(None).await;
}

#[tokio::test]
async fn a_kubelet_that_knows_only_v1alpha1_gets_the_same_health_stream() {
    health_stream_sends_the_snapshot_then_every_change(Some(HealthApiVersion::V1alpha1)).await;
}

#[tokio::test]
async fn health_services_are_advertised_after_the_dra_services() {
    let node = Node::new().await;
    let plugin = node
        .builder()
        .health(HealthReporter::new())
        .start(Arc::new(TestDriver::default()))
        .await
        .unwrap();
    let kubelet = node
        .kubelet
        .wait_for_plugin(DRIVER, PATIENCE)
        .await
        .unwrap();
    assert_eq!(
        kubelet.info().supported_versions,
        [
            "v1.DRAPlugin",
            "v1beta1.DRAPlugin",
            "v1.DRAResourceHealth",
            "v1alpha1.DRAResourceHealth"
        ]
    );
    assert_eq!(kubelet.negotiated_version(), DraApiVersion::V1);
    assert_eq!(kubelet.health_version(), Some(HealthApiVersion::V1));
    plugin.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_health_reporter_no_health_service_is_advertised_or_served() {
    let node = Node::new().await;
    let (plugin, kubelet) = node.start(Arc::new(TestDriver::default())).await;
    assert_eq!(
        kubelet.info().supported_versions,
        ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    );
    // A kubelet that picks from the registration does not watch at all...
    assert_eq!(kubelet.health_version(), None);
    let error = kubelet.watch_health().await.unwrap_err().to_string();
    assert!(error.contains("advertises no DRAResourceHealth"), "{error}");
    // ...and one that tries anyway (1.34 opened v1alpha1 on every plugin) is told
    // Unimplemented, which it takes as "no health information".
    for version in HealthApiVersion::ALL {
        let refused = kubelet.watch_health_version(version).await.unwrap_err();
        let status = refused.downcast_ref::<tonic::Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{version:?}");
    }
    plugin.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// The kubelet's own checks, against hand-written servers that break the rules.

/// A DRA v1 server answering prepare and unprepare with fixed claim UIDs, whatever it is
/// asked (a broken plugin the `kubeletplugin` library would never be).
struct FixedAnswers {
    uids: Vec<String>,
}

#[tonic::async_trait]
impl kubeletplugin::proto::dra_v1::dra_plugin_server::DraPlugin for FixedAnswers {
    async fn node_prepare_resources(
        &self,
        _: tonic::Request<kubeletplugin::proto::dra_v1::NodePrepareResourcesRequest>,
    ) -> Result<
        tonic::Response<kubeletplugin::proto::dra_v1::NodePrepareResourcesResponse>,
        tonic::Status,
    > {
        let claims = self
            .uids
            .iter()
            .map(|uid| (uid.clone(), Default::default()))
            .collect();
        Ok(tonic::Response::new(
            kubeletplugin::proto::dra_v1::NodePrepareResourcesResponse { claims },
        ))
    }

    async fn node_unprepare_resources(
        &self,
        _: tonic::Request<kubeletplugin::proto::dra_v1::NodeUnprepareResourcesRequest>,
    ) -> Result<
        tonic::Response<kubeletplugin::proto::dra_v1::NodeUnprepareResourcesResponse>,
        tonic::Status,
    > {
        let claims = self
            .uids
            .iter()
            .map(|uid| (uid.clone(), Default::default()))
            .collect();
        Ok(tonic::Response::new(
            kubeletplugin::proto::dra_v1::NodeUnprepareResourcesResponse { claims },
        ))
    }
}

/// Serves `FixedAnswers` for `uids` on a socket in `dir` and connects the kubelet to it.
async fn fixed_answers(dir: &Path, uids: &[&str]) -> DraClient {
    use kubeletplugin::proto::dra_v1::dra_plugin_server::DraPluginServer;
    let socket = dir.join(format!("fixed-{}.sock", uids.len()));
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let service = DraPluginServer::new(FixedAnswers {
        uids: uids.iter().map(|u| (*u).to_owned()).collect(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    DraClient::connect(&socket, Default::default(), DraApiVersion::V1)
        .await
        .unwrap()
}

fn claim_ref(uid: &str) -> ClaimRef {
    ClaimRef {
        namespace: NAMESPACE.into(),
        name: format!("claim-{uid}"),
        uid: uid.into(),
    }
}

#[tokio::test]
async fn the_kubelet_refuses_a_result_for_a_claim_it_did_not_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = fixed_answers(dir.path(), &["uid-a", "uid-stranger"]).await;
    let asked = [claim_ref("uid-a"), claim_ref("uid-b")];
    let prepare = kubelet
        .prepare(DraApiVersion::V1, &asked)
        .await
        .unwrap_err();
    assert_eq!(
        prepare.to_string(),
        "NodePrepareResources returned result for unknown claim UID uid-stranger"
    );
    let unprepare = kubelet
        .unprepare(DraApiVersion::V1, &asked)
        .await
        .unwrap_err();
    assert_eq!(
        unprepare.to_string(),
        "NodeUnprepareResources returned result for unknown claim UID uid-stranger"
    );
}

#[tokio::test]
async fn the_kubelet_refuses_a_response_that_skips_claims() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = fixed_answers(dir.path(), &["uid-a"]).await;
    let asked = [claim_ref("uid-a"), claim_ref("uid-b"), claim_ref("uid-c")];
    let prepare = kubelet
        .prepare(DraApiVersion::V1, &asked)
        .await
        .unwrap_err();
    assert_eq!(
        prepare.to_string(),
        "NodePrepareResources skipped 2 ResourceClaims"
    );
    let unprepare = kubelet
        .unprepare(DraApiVersion::V1, &asked)
        .await
        .unwrap_err();
    assert_eq!(
        unprepare.to_string(),
        "NodeUnprepareResources skipped 2 ResourceClaims"
    );
    // A complete answer passes.
    let complete = kubelet
        .prepare(DraApiVersion::V1, &asked[..1])
        .await
        .unwrap();
    assert_eq!(complete.keys().collect::<Vec<_>>(), ["uid-a"]);
}

/// A registration socket whose `GetInfo` always fails.
struct NotReady;

#[tonic::async_trait]
impl kubeletplugin::proto::registration::registration_server::Registration for NotReady {
    async fn get_info(
        &self,
        _: tonic::Request<kubeletplugin::proto::registration::InfoRequest>,
    ) -> Result<tonic::Response<kubeletplugin::proto::registration::PluginInfo>, tonic::Status>
    {
        Err(tonic::Status::unavailable(
            "still loading the device inventory",
        ))
    }

    async fn notify_registration_status(
        &self,
        _: tonic::Request<kubeletplugin::proto::registration::RegistrationStatus>,
    ) -> Result<
        tonic::Response<kubeletplugin::proto::registration::RegistrationStatusResponse>,
        tonic::Status,
    > {
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test]
async fn a_failing_get_info_is_retried_and_named_when_the_wait_runs_out() {
    use kubeletplugin::proto::registration::registration_server::RegistrationServer;
    let node = Node::new().await;
    std::fs::create_dir_all(node.registrar_dir()).unwrap();
    let socket = node.registrar_dir().join("broken-reg.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(NotReady))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    // The wait has to run out to show its error; half a second is several probes.
    let error = node
        .kubelet
        .wait_for_plugin(DRIVER, Duration::from_millis(500))
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("broken-reg.sock")
            && message.contains("still loading the device inventory"),
        "{message}"
    );
    let errors = node.kubelet.probe_errors();
    assert!(
        errors[&socket].contains("still loading the device inventory"),
        "{errors:?}"
    );
}
