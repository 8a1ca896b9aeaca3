//! NRI plugin against the NRI runtime stand-in, over a real unix socket, and (one test)
//! against a real containerd.
//!
//! Run: `cargo test -p netclaim-test --test nri` (as root for the real containerd;
//! `NETCLAIM_CONTAINERD_MAJOR=2` for containerd 2.x).

// Test helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use netclaim::deadline::HookDeadline;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netclaim::nri::mux::{Mux, MuxHandle, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
use netclaim::nri::plugin::{PLUGIN_SERVICE, RUNTIME_SERVICE};
use netclaim::nri::proto::{
    ConfigureRequest, ConfigureResponse, Empty, PodSandbox, RegisterPluginRequest,
    StateChangeEvent, SynchronizeRequest, SynchronizeResponse,
};
use netclaim::nri::ttrpc::{CallError, Client, Server, Status, code};
use netclaim::nri::{
    ConnectionState, NriConfig, NriPlugin, PodSandboxHandler, network_namespace_path,
};
use netclaim_test::containerd::{ContainerdNode, ContainerdOptions, PodSpec};
use netclaim_test::runtime::{EventStyle, HookError, RuntimeOptions, RuntimeStandIn, pod_sandbox};
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// What the handler saw, in order.
#[derive(Clone, Debug)]
enum Seen {
    Sync(Vec<PodSandbox>),
    Run(PodSandbox),
    Stop(PodSandbox),
    Remove(PodSandbox),
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

    fn syncs(&self) -> Vec<Vec<PodSandbox>> {
        self.seen()
            .into_iter()
            .filter_map(|seen| match seen {
                Seen::Sync(pods) => Some(pods),
                _ => None,
            })
            .collect()
    }
}

impl PodSandboxHandler for Recorder {
    async fn synchronize(&self, pods: Vec<PodSandbox>, _deadline: HookDeadline) {
        self.record(Seen::Sync(pods));
    }

    async fn run_pod_sandbox(
        &self,
        pod: PodSandbox,
        _deadline: HookDeadline,
    ) -> Result<(), String> {
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
        pod: PodSandbox,
        _deadline: HookDeadline,
    ) -> Result<(), String> {
        self.record(Seen::Stop(pod));
        Ok(())
    }

    async fn remove_pod_sandbox(
        &self,
        pod: PodSandbox,
        _deadline: HookDeadline,
    ) -> Result<(), String> {
        self.record(Seen::Remove(pod));
        Ok(())
    }
}

/// A runtime stand-in and a netclaim plugin connected to it.
struct Node {
    _dir: tempfile::TempDir,
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
        _dir: dir,
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

fn pod_ids(pods: &[PodSandbox]) -> Vec<String> {
    pods.iter().map(|pod| pod.id.clone()).collect()
}

#[tokio::test]
async fn registers_configures_and_synchronizes_live_pods() {
    let mut node = node(RuntimeOptions::default(), pods(3)).await;
    let info = node.runtime.wait_for_plugin(WAIT).await.unwrap();
    assert_eq!(info.name, "netclaim");
    assert_eq!(info.idx, "10");
    assert_eq!(info.events, 0x7);
    wait_state(&mut node.state, ConnectionState::Connected { session: 1 }).await;
    let syncs = node.recorder.syncs();
    assert_eq!(syncs.len(), 1);
    assert_eq!(syncs[0], pods(3));
    assert_eq!(
        network_namespace_path(&syncs[0][2]),
        Some("/run/netns/cni-2")
    );
}

#[tokio::test]
async fn a_split_synchronize_reaches_the_handler_once_with_every_pod() {
    let options = RuntimeOptions {
        sync_pods_per_message: Some(2),
        ..RuntimeOptions::default()
    };
    let node = node(options, pods(5)).await;
    let syncs = node.recorder.syncs();
    assert_eq!(syncs.len(), 1, "{syncs:?}");
    assert_eq!(pod_ids(&syncs[0]), pod_ids(&pods(5)));
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
    assert_eq!(node.recorder.syncs(), vec![many]);
}

async fn lifecycle_reaches_the_handler(style: EventStyle) {
    let options = RuntimeOptions {
        event_style: style,
        ..RuntimeOptions::default()
    };
    let node = node(options, Vec::new()).await;
    let pod = pod_sandbox("sb-1", "web", "team-a", "uid-1", Some("/run/netns/cni-web"));
    node.runtime.run_pod_sandbox(pod.clone()).await.unwrap();
    node.runtime.stop_pod_sandbox(pod.clone()).await.unwrap();
    node.runtime.remove_pod_sandbox(pod.clone()).await.unwrap();
    let seen = node.recorder.seen();
    let [
        Seen::Sync(_),
        Seen::Run(run),
        Seen::Stop(stop),
        Seen::Remove(remove),
    ] = &seen[..]
    else {
        panic!("unexpected calls {seen:?}");
    };
    assert_eq!(run, &pod);
    assert_eq!(network_namespace_path(run), Some("/run/netns/cni-web"));
    for pod_without_netns in [stop, remove] {
        assert_eq!(pod_without_netns.uid, "uid-1");
        assert_eq!(network_namespace_path(pod_without_netns), None);
        assert_eq!(pod_without_netns.pid, 0);
    }
}

#[tokio::test]
async fn state_change_events_reach_the_handler() {
    lifecycle_reaches_the_handler(EventStyle::StateChange).await;
}

#[tokio::test]
async fn dedicated_pod_sandbox_rpcs_reach_the_handler() {
    lifecycle_reaches_the_handler(EventStyle::DedicatedRpc).await;
}

#[tokio::test]
async fn a_handler_error_fails_the_sandbox_with_the_drivers_message() {
    let node = node(RuntimeOptions::default(), Vec::new()).await;
    let message = "netclaim: claim default/gpu-net: device eth1 vanished";
    *node.recorder.fail_run_with.lock().unwrap() = Some(message.to_owned());
    let pod = pod_sandbox("sb-err", "web", "default", "uid-err", Some("/run/netns/x"));
    let err = node.runtime.run_pod_sandbox(pod.clone()).await.unwrap_err();
    assert_eq!(err.code(), Some(code::UNKNOWN), "{err}");
    assert_eq!(err.plugin_message(), Some(message));
    assert!(err.to_string().contains(message), "{err}");
    // A failed RUN does not make the pod known, and the plugin stays connected.
    assert!(node.runtime.pods().is_empty());
    node.runtime.stop_pod_sandbox(pod).await.unwrap();
}

#[tokio::test]
async fn a_slow_handler_is_answered_deadline_exceeded_in_time() {
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
    assert!(
        matches!(&err, HookError::Status { code, .. } if *code == code::DEADLINE_EXCEEDED),
        "expected a DeadlineExceeded answer, got {err}"
    );
    // Answered in time, so the runtime kept the plugin.
    assert_eq!(
        *node.state.borrow(),
        ConnectionState::Connected { session: 1 }
    );
    node.runtime.wait_for_plugin(Duration::ZERO).await.unwrap();
    // The held handler still runs to its end once released.
    hold.add_permits(1);
    node.recorder
        .wait_for("the late RUN", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Run(p) if p.id == "sb-slow"))
        })
        .await;
    node.runtime.stop_pod_sandbox(pod).await.unwrap();
    wait_state(&mut node.state, ConnectionState::Connected { session: 1 }).await;
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
    node.runtime.run_pod_sandbox(pod).await.unwrap();
}

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
    assert_eq!(
        pod_ids(&syncs[1]),
        vec!["sandbox-0".to_owned(), "sb-live".to_owned()]
    );
    assert_eq!(
        network_namespace_path(&syncs[1][1]),
        Some("/run/netns/live")
    );
    node.runtime.stop_pod_sandbox(pod).await.unwrap();
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
async fn shutdown_stops_the_plugin_and_the_runtime_sees_it_leave() {
    let node = node(RuntimeOptions::default(), Vec::new()).await;
    node.shutdown.cancel();
    tokio::time::timeout(WAIT, node.plugin)
        .await
        .unwrap()
        .unwrap();
    let pod = pod_sandbox("sb-3", "web", "default", "uid-3", None);
    node.runtime.wait_for_no_plugin(WAIT).await.unwrap();
    let err = node.runtime.run_pod_sandbox(pod).await.unwrap_err();
    assert!(matches!(err, HookError::NoPlugin), "{err}");
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

/// A hand-rolled plugin speaking the protocol with `server` on conn 1, registered as `idx`.
async fn raw_plugin(
    socket: &std::path::Path,
    server: Server,
    idx: &str,
) -> (Result<Empty, CallError>, Client, MuxHandle) {
    let stream = UnixStream::connect(socket).await.unwrap();
    let mut mux = Mux::new(stream);
    let plugin_conn = mux.open(PLUGIN_SERVICE_CONN).unwrap();
    let runtime_conn = mux.open(RUNTIME_SERVICE_CONN).unwrap();
    let handle = mux.start();
    tokio::spawn(Arc::new(server).serve(plugin_conn.reader, plugin_conn.writer));
    let client = Client::new(runtime_conn.reader, runtime_conn.writer);
    let request = RegisterPluginRequest {
        plugin_name: "raw".to_owned(),
        plugin_idx: idx.to_owned(),
        nri_version: String::new(),
    };
    let registered = client
        .call(RUNTIME_SERVICE, "RegisterPlugin", &request, WAIT)
        .await;
    (registered, client, handle)
}

/// Configure and Synchronize as a well-behaved plugin answers them; nothing else.
fn handshake_only_server() -> Server {
    let mut server = Server::new();
    server.register(
        PLUGIN_SERVICE,
        "Configure",
        |_: ConfigureRequest, _| async { Ok(ConfigureResponse { events: 0x7 }) },
    );
    server.register(PLUGIN_SERVICE, "Synchronize", |request: SynchronizeRequest, _| async move {
        Ok(SynchronizeResponse { more: request.more })
    });
    server
}

#[tokio::test]
async fn the_runtime_refuses_an_index_that_is_not_two_digits() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = RuntimeStandIn::listen(dir.path().join("nri.sock"))
        .await
        .unwrap();
    let (registered, _client, _mux) =
        raw_plugin(runtime.socket_path(), handshake_only_server(), "123").await;
    let err = registered.unwrap_err();
    assert_eq!(err.status_code(), Some(code::INVALID_ARGUMENT), "{err}");
    assert!(err.to_string().contains("index"), "{err}");
    assert!(runtime.last_error().unwrap().contains("\"123\""));
    assert!(
        runtime
            .wait_for_plugin(Duration::from_millis(50))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_runtime_disconnects_a_plugin_that_misses_a_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let options = RuntimeOptions {
        request_timeout: Duration::from_millis(300),
        ..RuntimeOptions::default()
    };
    let runtime = RuntimeStandIn::listen_with(dir.path().join("nri.sock"), options)
        .await
        .unwrap();
    let mut server = handshake_only_server();
    server.register(PLUGIN_SERVICE, "StateChange", |_: StateChangeEvent, _| {
        std::future::pending::<Result<Empty, Status>>()
    });
    let (registered, _client, mux) = raw_plugin(runtime.socket_path(), server, "20").await;
    registered.unwrap();
    runtime.wait_for_plugin(WAIT).await.unwrap();
    let pod = pod_sandbox("sb-4", "web", "default", "uid-4", Some("/run/netns/z"));
    let err = runtime.run_pod_sandbox(pod).await.unwrap_err();
    assert!(matches!(err, HookError::DeadlineMissed(_)), "{err}");
    tokio::time::timeout(WAIT, mux.closed()).await.unwrap();
}

#[tokio::test]
async fn newer_runtimes_fall_back_to_state_change_on_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let options = RuntimeOptions {
        event_style: EventStyle::DedicatedRpc,
        ..RuntimeOptions::default()
    };
    let runtime = RuntimeStandIn::listen_with(dir.path().join("nri.sock"), options)
        .await
        .unwrap();
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut server = handshake_only_server();
    server.register(
        PLUGIN_SERVICE,
        "StateChange",
        move |event: StateChangeEvent, _| {
            let _ = events_tx.send(event.event);
            async { Ok(Empty {}) }
        },
    );
    let (registered, _client, _mux) = raw_plugin(runtime.socket_path(), server, "30").await;
    registered.unwrap();
    runtime.wait_for_plugin(WAIT).await.unwrap();
    let pod = pod_sandbox("sb-5", "web", "default", "uid-5", Some("/run/netns/w"));
    runtime.run_pod_sandbox(pod.clone()).await.unwrap();
    runtime.stop_pod_sandbox(pod).await.unwrap();
    let first = tokio::time::timeout(WAIT, events_rx.recv()).await.unwrap();
    let second = tokio::time::timeout(WAIT, events_rx.recv()).await.unwrap();
    assert_eq!((first, second), (Some(1), Some(2)));
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
