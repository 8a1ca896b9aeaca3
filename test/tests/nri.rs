//! The NRI protocol between netclaim's plugin and the NRI runtime stand-in, over real unix
//! sockets, and between the two independent implementations of its wire format (the
//! driver's `netclaim::nri::{mux, ttrpc}` and the harness's `netclaim_test::nri_wire`).
//!
//! What the runtime does here is what containerd does (see `test/src/runtime.rs` for the
//! source of each rule): a plugin that misses a deadline or loses its connection is dropped
//! and the pod goes on without it; a plugin's error status fails the pod, and STOP and
//! REMOVE follow.
//!
//! One test runs the plugin library against a real containerd (1.7.24 or 2.1.9).
//!
//! Run: `cargo test -p netclaim-test --test nri` (as root for the real containerd;
//! `NETCLAIM_CONTAINERD_MAJOR=2` for containerd 2.x).

// Test helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use netclaim::deadline::HookDeadline;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use netclaim::nri::proto::PodSandbox as DriverPod;
use netclaim::nri::{
    ConnectionState, NriConfig, NriPlugin, PodSandboxHandler, network_namespace_path,
};
use netclaim_test::containerd::{ContainerdNode, ContainerdOptions, PodSpec};
use netclaim_test::nri_wire::api::{
    ConfigureRequest, ConfigureResponse, Empty, RegisterPluginRequest, StateChangeEvent,
    SynchronizeRequest, SynchronizeResponse,
};
use netclaim_test::nri_wire::mux::{
    Framing, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Trunk, TrunkOptions,
};
use netclaim_test::nri_wire::ttrpc::{self, CallError, Client, Server, Status, code};
use netclaim_test::nri_wire::{PLUGIN_SERVICE, RUNTIME_SERVICE};
use netclaim_test::runtime::{
    DeliveryOutcome, HookError, NriVersion, PodSandbox, RuntimeOptions, RuntimeStandIn, driver_pod,
    pod_sandbox,
};
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

// ---- the driver's plugin, recording what its handler sees --------------------------------

/// What the handler saw, in order.
#[derive(Clone, Debug)]
enum Seen {
    Sync(Vec<DriverPod>),
    RunStarted(String),
    Run(DriverPod),
    Stop(DriverPod),
    Remove(DriverPod),
}

/// A handler that records every call, and can fail or hold RUN.
struct Recorder {
    seen: watch::Sender<Vec<Seen>>,
    fail_run_with: Mutex<Option<String>>,
    hold_run: Mutex<Option<Arc<Semaphore>>>,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Recorder {
            seen: watch::channel(Vec::new()).0,
            fail_run_with: Mutex::new(None),
            hold_run: Mutex::new(None),
        })
    }

    fn record(&self, seen: Seen) {
        self.seen.send_modify(|all| all.push(seen));
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.borrow().clone()
    }

    /// Waits until the recorded calls satisfy `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let mut rx = self.seen.subscribe();
        match tokio::time::timeout(WAIT, rx.wait_for(|all| done(all))).await {
            Ok(Ok(all)) => all.clone(),
            _ => panic!("handler never saw {what}; saw {:?}", self.seen()),
        }
    }

    fn syncs(&self) -> Vec<Vec<DriverPod>> {
        self.seen()
            .into_iter()
            .filter_map(|seen| match seen {
                Seen::Sync(pods) => Some(pods),
                _ => None,
            })
            .collect()
    }

    /// The pod events (not syncs, not RUN starts) as `"RUN sb-1"`, `"STOP sb-1"`, ...
    fn events(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|seen| match seen {
                Seen::Run(p) => Some(format!("RUN {}", p.id)),
                Seen::Stop(p) => Some(format!("STOP {}", p.id)),
                Seen::Remove(p) => Some(format!("REMOVE {}", p.id)),
                _ => None,
            })
            .collect()
    }
}

impl PodSandboxHandler for Recorder {
    async fn synchronize(&self, pods: Vec<DriverPod>, _deadline: HookDeadline) {
        self.record(Seen::Sync(pods));
    }

    async fn run_pod_sandbox(&self, pod: DriverPod, _deadline: HookDeadline) -> Result<(), String> {
        self.record(Seen::RunStarted(pod.id.clone()));
        let hold = self.hold_run.lock().unwrap().clone();
        if let Some(hold) = hold {
            // Held until the test adds a permit: a handler slower than any deadline.
            let _permit = hold.acquire().await.map_err(|e| e.to_string())?;
        }
        self.record(Seen::Run(pod));
        match self.fail_run_with.lock().unwrap().clone() {
            Some(message) => Err(message),
            None => Ok(()),
        }
    }

    async fn stop_pod_sandbox(
        &self,
        pod: DriverPod,
        _deadline: HookDeadline,
    ) -> Result<(), String> {
        self.record(Seen::Stop(pod));
        Ok(())
    }

    async fn remove_pod_sandbox(
        &self,
        pod: DriverPod,
        _deadline: HookDeadline,
    ) -> Result<(), String> {
        self.record(Seen::Remove(pod));
        Ok(())
    }
}

/// A runtime stand-in and a netclaim plugin connected to it.
struct Node {
    dir: tempfile::TempDir,
    runtime: RuntimeStandIn,
    recorder: Arc<Recorder>,
    state: watch::Receiver<ConnectionState>,
    shutdown: CancellationToken,
    plugin: JoinHandle<()>,
}

fn plugin_config(socket_path: &std::path::Path) -> NriConfig {
    NriConfig {
        socket_path: socket_path.to_owned(),
        reconnect_initial: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ..NriConfig::default()
    }
}

fn start_plugin(
    config: NriConfig,
    recorder: Arc<Recorder>,
) -> (
    watch::Receiver<ConnectionState>,
    CancellationToken,
    JoinHandle<()>,
) {
    let plugin = NriPlugin::new(config, recorder).unwrap();
    let state = plugin.connection_state();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { plugin.run(token).await.unwrap() });
    (state, shutdown, task)
}

async fn node(options: RuntimeOptions, pods: Vec<PodSandbox>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = RuntimeStandIn::listen_with(&socket, options).await.unwrap();
    runtime.set_pods(pods);
    let recorder = Recorder::new();
    let (state, shutdown, plugin) = start_plugin(plugin_config(&socket), recorder.clone());
    runtime.wait_for_plugin(WAIT).await.unwrap();
    Node {
        dir,
        runtime,
        recorder,
        state,
        shutdown,
        plugin,
    }
}

async fn wait_state(state: &mut watch::Receiver<ConnectionState>, want: ConnectionState) {
    let reached = tokio::time::timeout(WAIT, state.wait_for(|now| *now == want))
        .await
        .is_ok_and(|result| result.is_ok());
    assert!(
        reached,
        "plugin never reached {want:?}; it is {:?}",
        *state.borrow()
    );
}

fn pods(count: usize) -> Vec<PodSandbox> {
    (0..count)
        .map(|i| {
            pod_sandbox(
                &format!("sandbox-{i}"),
                &format!("pod-{i}"),
                "default",
                &format!("uid-{i}"),
                Some(&format!("/run/netns/cni-{i}")),
            )
        })
        .collect()
}

fn as_driver(pods: &[PodSandbox]) -> Vec<DriverPod> {
    pods.iter().map(driver_pod).collect()
}

fn pod_ids(pods: &[DriverPod]) -> Vec<String> {
    pods.iter().map(|pod| pod.id.clone()).collect()
}

fn v0_8() -> RuntimeOptions {
    RuntimeOptions {
        nri: NriVersion::V0_8,
        runtime_version: "2.1.9".to_owned(),
        ..RuntimeOptions::default()
    }
}

// ---- handshake and Synchronize -----------------------------------------------------------

#[tokio::test]
async fn registers_configures_and_synchronizes_live_pods() {
    let mut node = node(RuntimeOptions::default(), pods(3)).await;
    let info = node.runtime.wait_for_plugin(WAIT).await.unwrap();
    assert_eq!(info.name, "netclaim");
    assert_eq!(info.idx, "10");
    assert_eq!(info.events, 0x7);
    wait_state(&mut node.state, ConnectionState::Connected { session: 1 }).await;
    let syncs = node.recorder.syncs();
    assert_eq!(syncs, vec![as_driver(&pods(3))]);
    assert_eq!(
        network_namespace_path(&syncs[0][2]),
        Some("/run/netns/cni-2")
    );
}

#[tokio::test]
async fn a_split_synchronize_reaches_the_handler_once_with_every_pod() {
    let options = RuntimeOptions {
        sync_pods_per_message: Some(2),
        ..v0_8()
    };
    let node = node(options, pods(5)).await;
    let syncs = node.recorder.syncs();
    assert_eq!(syncs.len(), 1, "{syncs:?}");
    assert_eq!(pod_ids(&syncs[0]), pod_ids(&as_driver(&pods(5))));
}

/// Pods with enough annotation bytes that one Synchronize would be over ttrpc's 4 MiB.
fn big_pods() -> Vec<PodSandbox> {
    let mut many = pods(600);
    for pod in &mut many {
        pod.annotations
            .insert("example.com/padding".to_owned(), "x".repeat(8 * 1024));
    }
    let size: usize = many.iter().map(prost::Message::encoded_len).sum();
    assert!(size > ttrpc::MAX_MESSAGE_LEN, "only {size} bytes");
    many
}

#[tokio::test]
async fn containerd_2_splits_a_synchronize_over_4_mib_and_the_handler_gets_it_whole() {
    let many = big_pods();
    let node = node(v0_8(), many.clone()).await;
    assert_eq!(node.recorder.syncs().len(), 1);
    assert_eq!(
        pod_ids(&node.recorder.syncs()[0]),
        pod_ids(&as_driver(&many))
    );
}

#[tokio::test]
async fn containerd_1_7_cannot_send_a_synchronize_over_4_mib_and_leaves_the_plugin_out() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = RuntimeStandIn::listen(dir.path().join("nri.sock"))
        .await
        .unwrap();
    runtime.set_pods(big_pods());
    let log = Log::default();
    let plugin =
        RawPlugin::connect(runtime.socket_path(), "big", "10", Script::default(), &log).await;
    plugin.registered.clone().unwrap();
    // Positive synchronisation: connections are taken one at a time, so the next one's
    // registration is answered only after the first one's Synchronize was given up.
    let second = RawPlugin::connect(
        runtime.socket_path(),
        "after",
        "20",
        Script::default(),
        &log,
    )
    .await;
    second.registered.clone().unwrap();
    assert!(runtime.plugins().is_empty());
    let error = runtime.last_error().unwrap();
    assert!(
        error.starts_with("failed to synchronize plugin: message length"),
        "{error}"
    );
    // NRI v0.6 leaves such a connection open and unused.
    assert!(!plugin.trunk.is_closed());
}

#[tokio::test]
async fn a_synchronize_larger_than_a_mux_frame_arrives_whole() {
    let mut many = pods(400);
    for pod in &mut many {
        pod.annotations
            .insert("example.com/padding".to_owned(), "x".repeat(200));
    }
    let wire_size: usize = many.iter().map(prost::Message::encoded_len).sum();
    assert!(wire_size > 20 * 4096, "only {wire_size} bytes");
    let node = node(RuntimeOptions::default(), many.clone()).await;
    assert_eq!(node.recorder.syncs(), vec![as_driver(&many)]);
}

#[tokio::test]
async fn configure_carries_the_timeouts_only_from_containerd_2() {
    for (options, expected) in [
        (RuntimeOptions::default(), (0, 0)),
        (
            RuntimeOptions {
                request_timeout: Duration::from_millis(1500),
                ..v0_8()
            },
            (5000, 1500),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let runtime = RuntimeStandIn::listen_with(dir.path().join("nri.sock"), options)
            .await
            .unwrap();
        let log = Log::default();
        let plugin =
            RawPlugin::connect(runtime.socket_path(), "cfg", "10", Script::default(), &log).await;
        plugin.registered.clone().unwrap();
        runtime.wait_for_plugin(WAIT).await.unwrap();
        let configure = log.configure.lock().unwrap().clone().unwrap();
        assert_eq!(
            (configure.registration_timeout, configure.request_timeout),
            expected
        );
    }
}

// ---- pod events --------------------------------------------------------------------------

async fn lifecycle_reaches_the_handler(nri: NriVersion) {
    let options = RuntimeOptions {
        nri,
        ..RuntimeOptions::default()
    };
    let node = node(options, Vec::new()).await;
    let pod = pod_sandbox("sb-1", "web", "team-a", "uid-1", Some("/run/netns/cni-web"));
    for report in [
        node.runtime.run_pod_sandbox(pod.clone()).await.unwrap(),
        node.runtime.stop_pod_sandbox(pod.clone()).await.unwrap(),
        node.runtime.remove_pod_sandbox(pod.clone()).await.unwrap(),
    ] {
        assert!(report.sent);
        assert_eq!(
            report.outcome_for("netclaim"),
            Some(&DeliveryOutcome::Answered)
        );
    }
    let seen = node.recorder.seen();
    let [
        Seen::Sync(_),
        Seen::RunStarted(_),
        Seen::Run(run),
        Seen::Stop(stop),
        Seen::Remove(remove),
    ] = &seen[..]
    else {
        panic!("unexpected calls {seen:?}");
    };
    assert_eq!(run, &driver_pod(&pod));
    assert_eq!(network_namespace_path(run), Some("/run/netns/cni-web"));
    for pod_without_netns in [stop, remove] {
        assert_eq!(pod_without_netns.uid, "uid-1");
        assert_eq!(network_namespace_path(pod_without_netns), None);
        assert_eq!(pod_without_netns.pid, 0);
    }
}

#[tokio::test]
async fn state_change_events_reach_the_handler() {
    lifecycle_reaches_the_handler(NriVersion::V0_6).await;
}

#[tokio::test]
async fn dedicated_pod_sandbox_rpcs_reach_the_handler() {
    lifecycle_reaches_the_handler(NriVersion::V0_12).await;
}

#[tokio::test]
async fn a_handler_error_fails_the_sandbox_and_stop_and_remove_follow() {
    let node = node(RuntimeOptions::default(), Vec::new()).await;
    let message = "netclaim: claim default/gpu-net: device eth1 vanished";
    *node.recorder.fail_run_with.lock().unwrap() = Some(message.to_owned());
    let pod = pod_sandbox("sb-err", "web", "default", "uid-err", Some("/run/netns/x"));
    let err = node.runtime.run_pod_sandbox(pod.clone()).await.unwrap_err();
    assert_eq!(err.code(), Some(code::UNKNOWN), "{err}");
    assert_eq!(err.plugin_message(), Some(message));
    assert!(err.to_string().contains(message), "{err}");
    // As containerd does: STOP and REMOVE at once, and the pod never becomes known.
    assert_eq!(
        node.recorder.events(),
        ["RUN sb-err", "STOP sb-err", "REMOVE sb-err"]
    );
    assert!(node.runtime.pods().is_empty());
    // Each went once: a later STOP for the pod is not sent again.
    let again = node.runtime.stop_pod_sandbox(pod).await.unwrap();
    assert!(!again.sent);
    assert_eq!(
        node.runtime.plugins().len(),
        1,
        "an error answer keeps the plugin"
    );
}

#[tokio::test]
async fn a_slow_handler_answers_deadline_exceeded_itself_which_fails_the_sandbox() {
    let options = RuntimeOptions {
        request_timeout: Duration::from_millis(600),
        ..RuntimeOptions::default()
    };
    let mut node = node(options, Vec::new()).await;
    let hold = Arc::new(Semaphore::new(0));
    *node.recorder.hold_run.lock().unwrap() = Some(hold.clone());
    let pod = pod_sandbox(
        "sb-slow",
        "web",
        "default",
        "uid-slow",
        Some("/run/netns/s"),
    );
    let err = node.runtime.run_pod_sandbox(pod.clone()).await.unwrap_err();
    // An answer, in time, with a status: an application error, not a missed deadline.
    assert!(
        matches!(&err, HookError::Status { code, .. } if *code == code::DEADLINE_EXCEEDED),
        "expected a DeadlineExceeded answer, got {err}"
    );
    assert!(
        node.runtime.drops().is_empty(),
        "{:?}",
        node.runtime.drops()
    );
    assert_eq!(
        *node.state.borrow(),
        ConnectionState::Connected { session: 1 }
    );
    // The held handler still runs to its end once released, and STOP/REMOVE came.
    hold.add_permits(1);
    node.recorder
        .wait_for("the late RUN", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Run(p) if p.id == "sb-slow"))
        })
        .await;
    let events = node.recorder.events();
    assert!(events.contains(&"STOP sb-slow".to_owned()), "{events:?}");
    assert!(events.contains(&"REMOVE sb-slow".to_owned()), "{events:?}");
    wait_state(&mut node.state, ConnectionState::Connected { session: 1 }).await;
}

#[tokio::test]
async fn a_plugin_that_dies_mid_call_is_dropped_the_pod_runs_and_the_next_sync_has_it() {
    let mut node = node(RuntimeOptions::default(), Vec::new()).await;
    let hold = Arc::new(Semaphore::new(0));
    *node.recorder.hold_run.lock().unwrap() = Some(hold.clone());
    let pod = pod_sandbox("sb-crash", "db", "default", "uid-c", Some("/run/netns/c"));
    let recorder = node.recorder.clone();
    let shutdown = node.shutdown.clone();
    let (report, ()) = tokio::join!(node.runtime.run_pod_sandbox(pod.clone()), async {
        recorder
            .wait_for("RUN entering the handler", |seen| {
                seen.iter()
                    .any(|s| matches!(s, Seen::RunStarted(id) if id == "sb-crash"))
            })
            .await;
        // The driver's plugin goes away with the call in flight.
        shutdown.cancel();
    });
    let report = report.expect("containerd goes on without a plugin whose connection died");
    assert!(
        matches!(report.outcome_for("netclaim"), Some(DeliveryOutcome::Dropped(why)) if why.contains("closed")),
        "{report:?}"
    );
    let drops = node.runtime.drops();
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(drops[0].during.as_deref(), Some("StateChange"));
    assert_eq!(pod_ids(&as_driver(&node.runtime.pods())), ["sb-crash"]);
    tokio::time::timeout(WAIT, &mut node.plugin)
        .await
        .unwrap()
        .unwrap();
    hold.add_permits(1);

    // The plugin comes back: its Synchronize lists the pod that ran without it.
    let (mut state, shutdown, _plugin) = start_plugin(
        plugin_config(&node.dir.path().join("nri.sock")),
        node.recorder.clone(),
    );
    node.runtime.wait_for_session(2, WAIT).await.unwrap();
    wait_state(&mut state, ConnectionState::Connected { session: 1 }).await;
    let syncs = node.recorder.syncs();
    assert_eq!(pod_ids(syncs.last().unwrap()), ["sb-crash"]);
    assert_eq!(
        network_namespace_path(&syncs.last().unwrap()[0]),
        Some("/run/netns/c")
    );
    shutdown.cancel();
}

#[tokio::test]
async fn unknown_methods_are_unimplemented() {
    let node = node(RuntimeOptions::default(), Vec::new()).await;
    for method in ["CreateContainer", "UpdatePodSandbox", "NoSuchMethod"] {
        let err = node
            .runtime
            .call_plugin_raw(method, Vec::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.status_code(),
            Some(code::UNIMPLEMENTED),
            "{method}: {err}"
        );
    }
    // The connection is unharmed.
    let pod = pod_sandbox("sb-2", "web", "default", "uid-2", Some("/run/netns/y"));
    let report = node.runtime.run_pod_sandbox(pod).await.unwrap();
    assert_eq!(
        report.outcome_for("netclaim"),
        Some(&DeliveryOutcome::Answered)
    );
}

// ---- reconnection ------------------------------------------------------------------------

#[tokio::test]
async fn the_plugin_reconnects_and_resynchronizes_after_a_runtime_restart() {
    let mut node = node(RuntimeOptions::default(), pods(1)).await;
    let pod = pod_sandbox(
        "sb-live",
        "db",
        "default",
        "uid-live",
        Some("/run/netns/live"),
    );
    node.runtime.run_pod_sandbox(pod.clone()).await.unwrap();
    node.runtime.restart().await.unwrap();
    let info = node.runtime.wait_for_session(2, WAIT).await.unwrap();
    assert_eq!(info.session, 2);
    wait_state(&mut node.state, ConnectionState::Connected { session: 2 }).await;
    let syncs = node.recorder.syncs();
    assert_eq!(syncs.len(), 2, "{syncs:?}");
    assert_eq!(pod_ids(&syncs[1]), ["sandbox-0", "sb-live"]);
    assert_eq!(
        network_namespace_path(&syncs[1][1]),
        Some("/run/netns/live")
    );
    // containerd keeps which pods it ran in memory only: after the restart, STOP and
    // REMOVE for a pod from before it are not sent (the driver must not rely on them).
    let stop = node.runtime.stop_pod_sandbox(pod.clone()).await.unwrap();
    let remove = node.runtime.remove_pod_sandbox(pod).await.unwrap();
    assert!(!stop.sent && !remove.sent);
    assert_eq!(node.recorder.events(), ["RUN sb-live"]);
}

#[tokio::test]
async fn the_plugin_waits_for_the_socket_to_come_back() {
    let mut node = node(RuntimeOptions::default(), Vec::new()).await;
    node.runtime.stop();
    wait_state(&mut node.state, ConnectionState::Disconnected).await;
    assert!(!node.runtime.socket_path().exists());
    node.runtime.start().await.unwrap();
    node.runtime.wait_for_session(2, WAIT).await.unwrap();
    wait_state(&mut node.state, ConnectionState::Connected { session: 2 }).await;
}

#[tokio::test]
async fn the_plugin_connects_when_the_runtime_starts_later() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let recorder = Recorder::new();
    let (mut state, shutdown, plugin) = start_plugin(plugin_config(&socket), recorder.clone());
    assert_eq!(*state.borrow(), ConnectionState::Disconnected);
    let runtime = RuntimeStandIn::listen(&socket).await.unwrap();
    runtime.wait_for_plugin(WAIT).await.unwrap();
    wait_state(&mut state, ConnectionState::Connected { session: 1 }).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, plugin).await.unwrap().unwrap();
}

#[tokio::test]
async fn after_the_plugin_shuts_down_pods_run_without_it() {
    let node = node(RuntimeOptions::default(), Vec::new()).await;
    node.shutdown.cancel();
    tokio::time::timeout(WAIT, node.plugin)
        .await
        .unwrap()
        .unwrap();
    node.runtime.wait_for_no_plugin(WAIT).await.unwrap();
    let pod = pod_sandbox("sb-3", "web", "default", "uid-3", None);
    let report = node.runtime.run_pod_sandbox(pod).await.unwrap();
    assert!(report.sent && report.deliveries.is_empty(), "{report:?}");
    assert_eq!(node.recorder.events(), Vec::<String>::new());
}

#[tokio::test]
async fn a_runtime_shutdown_ends_the_session_and_the_plugin_comes_back() {
    let mut node = node(RuntimeOptions::default(), pods(1)).await;
    let empty = prost::Message::encode_to_vec(&Empty {});
    node.runtime
        .call_plugin_raw("Shutdown", empty)
        .await
        .unwrap();
    // The stand-in keeps the connection open: the plugin closes it after its grace period
    // and reconnects, as it would to a restarted runtime.
    node.runtime.wait_for_session(2, WAIT).await.unwrap();
    wait_state(&mut node.state, ConnectionState::Connected { session: 2 }).await;
    assert_eq!(node.recorder.syncs().len(), 2);
}

// ---- hand-rolled plugins on the harness's own wire code ----------------------------------

/// What a hand-rolled plugin does when an event reaches it.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Answer,
    Fail,
    Hang,
}

/// How a hand-rolled plugin answers.
#[derive(Clone)]
struct Script {
    events: i32,
    on_event: Behaviour,
    fail_sync: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            events: 0x7,
            on_event: Behaviour::Answer,
            fail_sync: false,
        }
    }
}

/// What every hand-rolled plugin of a test saw: `"<name> <event> <pod id>"`, in order.
#[derive(Clone, Default)]
struct Log {
    events: Arc<watch::Sender<Vec<String>>>,
    configure: Arc<Mutex<Option<ConfigureRequest>>>,
}

impl Log {
    fn all(&self) -> Vec<String> {
        self.events.borrow().clone()
    }

    async fn wait_for(&self, entry: &str) {
        let mut rx = self.events.subscribe();
        let found = tokio::time::timeout(WAIT, rx.wait_for(|all| all.iter().any(|e| e == entry)))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(found, "no {entry:?} in {:?}", self.all());
    }
}

/// A plugin written on `netclaim_test::nri_wire`, registered as `name`/`idx`.
struct RawPlugin {
    trunk: Trunk,
    registered: Result<Empty, CallError>,
}

impl RawPlugin {
    async fn connect(
        socket: &std::path::Path,
        name: &str,
        idx: &str,
        script: Script,
        log: &Log,
    ) -> RawPlugin {
        let stream = UnixStream::connect(socket).await.unwrap();
        let (trunk, mut conns) = Trunk::start(
            stream,
            &[PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN],
            TrunkOptions::plugin(),
        )
        .unwrap();
        let runtime_conn = conns.pop().unwrap();
        let plugin_conn = conns.pop().unwrap();
        let server = Arc::new(plugin_server(name, script, log.clone()));
        tokio::spawn(server.serve(trunk.clone(), plugin_conn));
        let client = Client::new(trunk.clone(), runtime_conn);
        let request = RegisterPluginRequest {
            plugin_name: name.to_owned(),
            plugin_idx: idx.to_owned(),
            nri_version: String::new(),
        };
        let registered = client
            .call_typed(
                RUNTIME_SERVICE,
                "RegisterPlugin",
                &request,
                Instant::now() + WAIT,
            )
            .await;
        RawPlugin { trunk, registered }
    }
}

fn plugin_server(name: &str, script: Script, log: Log) -> Server {
    let mut server = Server::new();
    let events = script.events;
    let seen = log.configure.clone();
    server.register(
        PLUGIN_SERVICE,
        "Configure",
        move |request: ConfigureRequest, _| {
            *seen.lock().unwrap() = Some(request);
            async move { Ok(ConfigureResponse { events }) }
        },
    );
    let fail_sync = script.fail_sync;
    server.register(
        PLUGIN_SERVICE,
        "Synchronize",
        move |request: SynchronizeRequest, _| async move {
            if fail_sync {
                return Err(Status::unknown("cannot synchronize"));
            }
            Ok(SynchronizeResponse {
                update: Vec::new(),
                more: request.more,
            })
        },
    );
    let name = name.to_owned();
    server.register(
        PLUGIN_SERVICE,
        "StateChange",
        move |event: StateChangeEvent, _| {
            let entry = format!(
                "{name} {} {}",
                event.event,
                event.pod.map(|p| p.id).unwrap_or_default()
            );
            log.events.send_modify(|all| all.push(entry));
            let behaviour = script.on_event;
            async move {
                match behaviour {
                    Behaviour::Answer => Ok(Empty {}),
                    Behaviour::Fail => Err(Status::unknown("refused by the plugin")),
                    Behaviour::Hang => std::future::pending().await,
                }
            }
        },
    );
    server
}

async fn runtime(options: RuntimeOptions) -> (tempfile::TempDir, RuntimeStandIn) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = RuntimeStandIn::listen_with(dir.path().join("nri.sock"), options)
        .await
        .unwrap();
    (dir, runtime)
}

fn running(id: &str) -> PodSandbox {
    pod_sandbox(
        id,
        id,
        "default",
        &format!("uid-{id}"),
        Some("/run/netns/x"),
    )
}

#[tokio::test]
async fn a_plugin_that_misses_the_deadline_is_closed_and_the_pod_runs_without_it() {
    let (_dir, runtime) = runtime(RuntimeOptions {
        request_timeout: Duration::from_millis(300),
        ..RuntimeOptions::default()
    })
    .await;
    let log = Log::default();
    let script = Script {
        on_event: Behaviour::Hang,
        ..Script::default()
    };
    let plugin = RawPlugin::connect(runtime.socket_path(), "slow", "20", script, &log).await;
    plugin.registered.clone().unwrap();
    runtime.wait_for_plugin(WAIT).await.unwrap();
    let report = runtime.run_pod_sandbox(running("sb-4")).await.unwrap();
    let DeliveryOutcome::Dropped(reason) = report.outcome_for("slow").unwrap() else {
        panic!("{report:?}");
    };
    assert!(reason.contains("no ttrpc answer within"), "{reason}");
    assert_eq!(runtime.drops()[0].during.as_deref(), Some("StateChange"));
    assert_eq!(pod_ids(&as_driver(&runtime.pods())), ["sb-4"]);
    // containerd closes the plugin's connection.
    tokio::time::timeout(WAIT, plugin.trunk.closed())
        .await
        .unwrap();
    assert!(runtime.plugins().is_empty());
}

#[tokio::test]
async fn events_go_only_where_subscribed() {
    let (_dir, runtime) = runtime(RuntimeOptions::default()).await;
    let log = Log::default();
    let run_only = Script {
        events: 0x1,
        ..Script::default()
    };
    let plugin = RawPlugin::connect(runtime.socket_path(), "runner", "10", run_only, &log).await;
    plugin.registered.clone().unwrap();
    runtime.wait_for_plugin(WAIT).await.unwrap();
    runtime.run_pod_sandbox(running("a")).await.unwrap();
    let stop = runtime.stop_pod_sandbox(running("a")).await.unwrap();
    assert_eq!(
        stop.outcome_for("runner"),
        Some(&DeliveryOutcome::NotSubscribed)
    );
    // A later RUN is the marker: events are delivered in order, so once it arrived, the
    // STOP before it would have too.
    runtime.run_pod_sandbox(running("b")).await.unwrap();
    log.wait_for("runner 1 b").await;
    assert_eq!(log.all(), ["runner 1 a", "runner 1 b"]);
}

#[tokio::test]
async fn a_mask_of_zero_subscribes_to_every_event() {
    let (_dir, runtime) = runtime(RuntimeOptions::default()).await;
    let log = Log::default();
    let everything = Script {
        events: 0,
        ..Script::default()
    };
    let plugin = RawPlugin::connect(runtime.socket_path(), "all", "10", everything, &log).await;
    plugin.registered.clone().unwrap();
    assert_eq!(runtime.wait_for_plugin(WAIT).await.unwrap().events, 0x7ff);
    runtime.run_pod_sandbox(running("a")).await.unwrap();
    runtime.stop_pod_sandbox(running("a")).await.unwrap();
    runtime.remove_pod_sandbox(running("a")).await.unwrap();
    assert_eq!(log.all(), ["all 1 a", "all 2 a", "all 3 a"]);
}

#[tokio::test]
async fn a_mask_with_unknown_events_is_refused_and_the_plugin_closed() {
    let (_dir, runtime) = runtime(RuntimeOptions::default()).await;
    let log = Log::default();
    // Bit 12 is UPDATE_POD_SANDBOX, which NRI v0.6 (containerd 1.7) does not know.
    let unknown = Script {
        events: 0x7 | 1 << 11,
        ..Script::default()
    };
    let plugin = RawPlugin::connect(runtime.socket_path(), "odd", "10", unknown, &log).await;
    plugin.registered.clone().unwrap();
    tokio::time::timeout(WAIT, plugin.trunk.closed())
        .await
        .unwrap();
    assert_eq!(
        runtime.last_error().as_deref(),
        Some("invalid plugin events: 0x800")
    );
    assert!(runtime.plugins().is_empty());
}

#[tokio::test]
async fn plugins_are_called_in_index_order_and_an_error_stops_the_rest() {
    let (_dir, runtime) = runtime(RuntimeOptions::default()).await;
    let log = Log::default();
    let late =
        RawPlugin::connect(runtime.socket_path(), "late", "90", Script::default(), &log).await;
    late.registered.clone().unwrap();
    let refusing = Script {
        on_event: Behaviour::Fail,
        events: 0x1,
        ..Script::default()
    };
    let early = RawPlugin::connect(runtime.socket_path(), "early", "05", refusing, &log).await;
    early.registered.clone().unwrap();
    runtime.wait_for_session(2, WAIT).await.unwrap();
    let order: Vec<String> = runtime.plugins().into_iter().map(|p| p.idx).collect();
    assert_eq!(order, ["05", "90"]);

    let err = runtime.run_pod_sandbox(running("a")).await.unwrap_err();
    assert_eq!(err.plugin_message(), Some("refused by the plugin"));
    // The failed RUN never reached "late"; STOP and REMOVE (not subscribed by "early") did.
    log.wait_for("late 3 a").await;
    assert_eq!(log.all(), ["early 1 a", "late 2 a", "late 3 a"]);
}

#[tokio::test]
async fn a_second_plugin_with_the_same_name_and_index_is_another_plugin() {
    let (_dir, runtime) = runtime(RuntimeOptions::default()).await;
    let first_log = Log::default();
    let second_log = Log::default();
    let first = RawPlugin::connect(
        runtime.socket_path(),
        "twin",
        "10",
        Script::default(),
        &first_log,
    )
    .await;
    first.registered.clone().unwrap();
    let second = RawPlugin::connect(
        runtime.socket_path(),
        "twin",
        "10",
        Script::default(),
        &second_log,
    )
    .await;
    second.registered.clone().unwrap();
    runtime.wait_for_session(2, WAIT).await.unwrap();
    assert_eq!(runtime.plugins().len(), 2);
    let report = runtime.run_pod_sandbox(running("a")).await.unwrap();
    assert_eq!(report.deliveries.len(), 2);
    assert_eq!(first_log.all(), ["twin 1 a"]);
    assert_eq!(second_log.all(), ["twin 1 a"]);
    assert!(!first.trunk.is_closed());
}

#[tokio::test]
async fn the_runtime_refuses_an_index_that_is_not_two_digits_and_leaves_the_connection() {
    let (_dir, runtime) = runtime(RuntimeOptions::default()).await;
    let log = Log::default();
    let refused =
        RawPlugin::connect(runtime.socket_path(), "raw", "123", Script::default(), &log).await;
    let err = refused.registered.clone().unwrap_err();
    assert_eq!(
        err,
        CallError::Status {
            code: code::UNKNOWN,
            message: "invalid plugin index: invalid plugin index \"123\", must be 2 digits"
                .to_owned()
        }
    );
    // Positive synchronisation: connections are taken one at a time, so once a good
    // plugin is in, the refused one's handshake is over.
    let good =
        RawPlugin::connect(runtime.socket_path(), "good", "10", Script::default(), &log).await;
    good.registered.clone().unwrap();
    let info = runtime.wait_for_plugin(WAIT).await.unwrap();
    assert_eq!(info.name, "good");
    assert_eq!(runtime.plugins().len(), 1);
    assert_eq!(
        runtime.last_error().as_deref(),
        Some(
            "failed to register plugin: plugin \"raw\" registered invalid index: invalid plugin \
             index \"123\", must be 2 digits"
        )
    );
    // containerd does not close a refused connection.
    assert!(!refused.trunk.is_closed());
}

#[tokio::test]
async fn a_plugin_that_never_registers_is_closed_after_the_registration_timeout() {
    let (_dir, runtime) = runtime(RuntimeOptions {
        registration_timeout: Duration::from_millis(200),
        ..RuntimeOptions::default()
    })
    .await;
    let stream = UnixStream::connect(runtime.socket_path()).await.unwrap();
    let (silent, _conns) = Trunk::start(
        stream,
        &[PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN],
        TrunkOptions::plugin(),
    )
    .unwrap();
    tokio::time::timeout(WAIT, silent.closed()).await.unwrap();
    assert_eq!(
        runtime.last_error().as_deref(),
        Some("plugin registration timed out")
    );
}

async fn failed_sync(nri: NriVersion) -> (RawPlugin, RuntimeStandIn, tempfile::TempDir) {
    let (dir, runtime) = runtime(RuntimeOptions {
        nri,
        ..RuntimeOptions::default()
    })
    .await;
    let log = Log::default();
    let failing = Script {
        fail_sync: true,
        ..Script::default()
    };
    let plugin = RawPlugin::connect(runtime.socket_path(), "nosync", "10", failing, &log).await;
    plugin.registered.clone().unwrap();
    let next =
        RawPlugin::connect(runtime.socket_path(), "next", "20", Script::default(), &log).await;
    next.registered.clone().unwrap();
    assert_eq!(runtime.wait_for_plugin(WAIT).await.unwrap().name, "next");
    assert_eq!(runtime.plugins().len(), 1);
    (plugin, runtime, dir)
}

#[tokio::test]
async fn a_failed_synchronize_leaves_the_plugin_out_and_open_before_nri_0_12() {
    let (plugin, runtime, _dir) = failed_sync(NriVersion::V0_6).await;
    assert_eq!(
        runtime.last_error().as_deref(),
        Some("failed to synchronize plugin: ttrpc status 2: cannot synchronize")
    );
    assert!(!plugin.trunk.is_closed());
}

#[tokio::test]
async fn a_failed_synchronize_closes_the_plugin_from_nri_0_12() {
    let (plugin, _runtime, _dir) = failed_sync(NriVersion::V0_12).await;
    tokio::time::timeout(WAIT, plugin.trunk.closed())
        .await
        .unwrap();
}

#[tokio::test]
async fn newer_runtimes_fall_back_to_state_change_on_unimplemented() {
    let (_dir, runtime) = runtime(RuntimeOptions {
        nri: NriVersion::V0_12,
        ..RuntimeOptions::default()
    })
    .await;
    let log = Log::default();
    let plugin =
        RawPlugin::connect(runtime.socket_path(), "old", "30", Script::default(), &log).await;
    plugin.registered.clone().unwrap();
    runtime.wait_for_plugin(WAIT).await.unwrap();
    let run = runtime.run_pod_sandbox(running("sb-5")).await.unwrap();
    let stop = runtime.stop_pod_sandbox(running("sb-5")).await.unwrap();
    assert_eq!(run.deliveries[0].method, "StateChange");
    assert_eq!(stop.deliveries[0].method, "StateChange");
    assert_eq!(log.all(), ["old 1 sb-5", "old 2 sb-5"]);
}

// ---- the two wire implementations against each other -------------------------------------

const SERVICE: &str = "test.Echo";

/// Answers: `Reverse` (the payload reversed), `Fail` (status 9 with the payload as text).
fn sizes() -> Vec<usize> {
    vec![0, 1, 100, 4086, 4087, 4096, 20_000, 300_000]
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn reversed(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.reverse();
    bytes
}

/// The harness's server on `b`, framed as `framing` (and reading as a Go runtime does).
fn harness_server(b: UnixStream, framing: Framing) -> Trunk {
    let (trunk, mut conns) = Trunk::start(
        b,
        &[PLUGIN_SERVICE_CONN],
        TrunkOptions {
            framing,
            ..TrunkOptions::go_runtime()
        },
    )
    .unwrap();
    let mut server = Server::new();
    server.register_raw(SERVICE, "Reverse", |payload, info| {
        Box::pin(async move {
            assert!(info.timeout.is_some_and(|t| t <= WAIT), "{info:?}");
            Ok(reversed(payload.to_vec()))
        })
    });
    server.register_raw(SERVICE, "Fail", |payload, _| {
        Box::pin(async move {
            Err(Status::new(
                9,
                String::from_utf8_lossy(&payload).into_owned(),
            ))
        })
    });
    tokio::spawn(Arc::new(server).serve(trunk.clone(), conns.pop().unwrap()));
    trunk
}

#[tokio::test]
async fn the_drivers_client_and_the_harness_server_interoperate() {
    use netclaim::nri::mux::Mux;
    use netclaim::nri::ttrpc::Client as DriverClient;
    for framing in [Framing::GoBufio, Framing::Chunks(7)] {
        let (a, b) = UnixStream::pair().unwrap();
        let harness = harness_server(b, framing);
        let mut mux = Mux::new(a);
        let conn = mux.open(PLUGIN_SERVICE_CONN).unwrap();
        let handle = mux.start();
        let client = Arc::new(DriverClient::new(conn.reader, conn.writer));
        // Concurrent calls of every size: stream ids interleave, messages span frames.
        let calls = sizes().into_iter().map(|size| {
            let client = client.clone();
            tokio::spawn(async move {
                let answer = client
                    .call_raw(SERVICE, "Reverse", payload(size), WAIT)
                    .await
                    .unwrap();
                assert_eq!(answer.to_vec(), reversed(payload(size)), "size {size}");
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.unwrap();
        }
        let failed = client
            .call_raw(SERVICE, "Fail", b"no such device".to_vec(), WAIT)
            .await
            .unwrap_err();
        assert_eq!(failed.status_code(), Some(9));
        assert!(failed.to_string().contains("no such device"), "{failed}");
        let missing = client
            .call_raw(SERVICE, "Nope", Vec::new(), WAIT)
            .await
            .unwrap_err();
        assert_eq!(missing.status_code(), Some(code::UNIMPLEMENTED));
        // Every frame the driver wrote fit a Go reader's 4096 bytes, or the harness, which
        // reads as Go does, would have closed the connection.
        assert!(!harness.is_closed(), "{:?}", harness.close_reason());
        handle.close();
    }
}

#[tokio::test]
async fn the_harness_client_and_the_drivers_server_interoperate() {
    use netclaim::nri::mux::Mux;
    use netclaim::nri::ttrpc::{Server as DriverServer, Status as DriverStatus};
    for framing in [Framing::GoBufio, Framing::Chunks(7)] {
        let (a, b) = UnixStream::pair().unwrap();
        let mut mux = Mux::new(a);
        let conn = mux.open(PLUGIN_SERVICE_CONN).unwrap();
        let handle = mux.start();
        let mut server = DriverServer::new();
        server.register_raw(SERVICE, "Reverse", |payload: Bytes, context| {
            Box::pin(async move {
                assert!(context.timeout.is_some_and(|t| t <= WAIT), "{context:?}");
                Ok(reversed(payload.to_vec()))
            })
        });
        server.register_raw(SERVICE, "Fail", |payload: Bytes, _| {
            Box::pin(async move {
                Err(DriverStatus::new(
                    9,
                    String::from_utf8_lossy(&payload).into_owned(),
                ))
            })
        });
        tokio::spawn(Arc::new(server).serve(conn.reader, conn.writer));
        let (trunk, mut conns) = Trunk::start(
            b,
            &[PLUGIN_SERVICE_CONN],
            TrunkOptions {
                framing,
                ..TrunkOptions::go_runtime()
            },
        )
        .unwrap();
        let client = Arc::new(Client::new(trunk.clone(), conns.pop().unwrap()));
        let calls = sizes().into_iter().map(|size| {
            let client = client.clone();
            tokio::spawn(async move {
                let answer = client
                    .call(SERVICE, "Reverse", payload(size), Instant::now() + WAIT)
                    .await
                    .unwrap();
                assert_eq!(answer.to_vec(), reversed(payload(size)), "size {size}");
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.unwrap();
        }
        let failed = client
            .call(
                SERVICE,
                "Fail",
                b"eth1 vanished".to_vec(),
                Instant::now() + WAIT,
            )
            .await
            .unwrap_err();
        assert_eq!(
            failed,
            CallError::Status {
                code: 9,
                message: "eth1 vanished".to_owned()
            }
        );
        let missing = client
            .call(SERVICE, "Nope", Vec::new(), Instant::now() + WAIT)
            .await
            .unwrap_err();
        assert_eq!(missing.status_code(), Some(code::UNIMPLEMENTED));
        assert!(!trunk.is_closed(), "{:?}", trunk.close_reason());
        handle.close();
    }
}

#[tokio::test]
async fn a_frame_over_4096_bytes_breaks_a_go_reader() {
    // The harness reading as Go does refuses what the Go reader cannot take.
    let (a, b) = UnixStream::pair().unwrap();
    let reader = harness_server(b, Framing::GoBufio);
    let (writer, _conns) = Trunk::start(
        a,
        &[PLUGIN_SERVICE_CONN],
        TrunkOptions {
            framing: Framing::Chunks(8192),
            max_incoming_frame: usize::MAX,
        },
    )
    .unwrap();
    writer
        .send(PLUGIN_SERVICE_CONN, Bytes::from(vec![0u8; 5000]))
        .unwrap();
    tokio::time::timeout(WAIT, reader.closed()).await.unwrap();
    assert!(
        reader
            .close_reason()
            .is_some_and(|r| r.contains("5000 bytes") && r.contains("ENOMEM")),
        "{:?}",
        reader.close_reason()
    );
}

/// The plugin library against a real containerd, the major `NETCLAIM_CONTAINERD_MAJOR`
/// chooses (`hack/test.sh` runs this file on 1.7 and 2.x): it registers and is synchronized;
/// a handler error fails CRI RunPodSandbox with the handler's message, and STOP and REMOVE
/// follow; a handler slower than containerd's 2 s request timeout is answered
/// `DeadlineExceeded` in time, so containerd fails the sandbox with that status and keeps
/// the plugin connected. (A plugin that stays silent instead is disconnected and the sandbox
/// starts without it: `containerd_node.rs` checks that.)
#[tokio::test]
async fn plugin_library_on_a_real_containerd() {
    let node = ContainerdNode::start(ContainerdOptions::default())
        .await
        .expect("a containerd node (see NETCLAIM_CONTAINERD_MAJOR)");
    let on = format!("containerd {}", node.version());
    let recorder = Recorder::new();
    let config = NriConfig {
        plugin_idx: "42".to_owned(),
        ..plugin_config(node.nri_socket())
    };
    let (mut state, shutdown, plugin) = start_plugin(config, recorder.clone());
    let connected = ConnectionState::Connected { session: 1 };
    wait_state(&mut state, connected).await;
    recorder
        .wait_for("Synchronize", |seen| {
            seen.iter().any(|s| matches!(s, Seen::Sync(_)))
        })
        .await;
    let mut cri = node.cri().await.unwrap();

    // A handler error refuses the sandbox with the handler's message.
    *recorder.fail_run_with.lock().unwrap() = Some("netclaim: eth1 is gone".to_owned());
    let error = cri.run_pod(&PodSpec::new("refused")).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains(
            "NRI RunPodSandbox failed: rpc error: code = Unknown desc = netclaim: eth1 is gone"
        ),
        "{on}: {message}"
    );
    recorder
        .wait_for("STOP and REMOVE of the refused pod", |seen| {
            let stopped = seen
                .iter()
                .any(|s| matches!(s, Seen::Stop(p) if p.name == "refused"));
            let removed = seen
                .iter()
                .any(|s| matches!(s, Seen::Remove(p) if p.name == "refused"));
            stopped && removed
        })
        .await;
    *recorder.fail_run_with.lock().unwrap() = None;

    // A handler slower than the deadline: answered DeadlineExceeded, still connected.
    let hold = Arc::new(Semaphore::new(0));
    *recorder.hold_run.lock().unwrap() = Some(hold.clone());
    let error = cri.run_pod(&PodSpec::new("slow")).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("NRI RunPodSandbox failed: rpc error: code = DeadlineExceeded"),
        "{on}: {message}"
    );
    *recorder.hold_run.lock().unwrap() = None;
    hold.add_permits(1);
    assert_eq!(
        *state.borrow(),
        connected,
        "{on}: the plugin stayed connected"
    );
    let closed = node.log_lines("closing plugin 42-");
    assert!(closed.is_empty(), "{on}: {closed:?}");

    // The same session serves the next pod.
    let fine = PodSpec::new("fine");
    let id = cri.run_pod(&fine).await.unwrap();
    recorder
        .wait_for("RUN of the next pod", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Run(p) if p.name == "fine"))
        })
        .await;
    cri.stop_pod(&id).await.unwrap();
    cri.remove_pod(&id).await.unwrap();
    assert_eq!(*state.borrow(), connected, "{on}: one session throughout");

    shutdown.cancel();
    tokio::time::timeout(WAIT, plugin).await.unwrap().unwrap();
    drop(cri);
    node.stop().await.unwrap();
}
