//! An NRI runtime stand-in: the runtime side of containerd's NRI, for tests and demos.
//!
//! It speaks the real protocol over a real unix socket with the harness's own wire code
//! ([`crate::nri_wire`], not the driver's), framing and reading as containerd's Go code
//! does, and behaves as containerd does in every case the tests rely on. Each rule names
//! the source it follows: containerd/nri `pkg/adaptation/adaptation.go` and `plugin.go`
//! (v0.6.1 in containerd 1.7.24, v0.8.0 in containerd 2.1.9, v0.12 for the dedicated pod
//! calls), containerd's glue `internal/nri/nri.go` (1.7: `pkg/nri/nri.go`) and
//! `internal/cri/nri/nri_api_linux.go` (1.7: `pkg/cri/nri/nri_api_linux.go`).
//!
//! # Connections (`acceptPluginConnections`, `plugin.start`, `RegisterPlugin`, `configure`)
//! - Connections are handled one at a time, in the order they arrive: a plugin that does
//!   not register holds the next one up for the registration timeout.
//! - The plugin must call `RegisterPlugin` on conn 2 within the registration timeout (5 s):
//!   a non-empty name, an index of exactly two digits. A refused registration is answered
//!   with code Unknown and containerd's text, and the connection is **left open and never
//!   used** (containerd does not close it); a timeout closes it.
//! - `Configure` on conn 1 within the request timeout; containerd 2.x (NRI >= v0.8) sends the
//!   registration and request timeouts in milliseconds, 1.7 sends neither. The answer is the
//!   event mask (`1 << (event - 1)`); 0 means every event; bits beyond the valid events
//!   (0x7ff before NRI v0.12, 0x3fff from it) fail the plugin ("invalid plugin events") and
//!   close it, as does a failed `Configure`.
//! - `Synchronize` with every pod the runtime knows, under the same lock as pod events
//!   (`syncPlugin`), with one deadline for all its parts. NRI >= v0.8 splits it into parts
//!   flagged `more` only when one message would exceed ttrpc's 4 MiB (`recalcObjsPerSyncMsg`),
//!   and a plugin that does not echo `more` (or sends updates on such a part) is closed.
//!   A failed Synchronize leaves the plugin out; NRI v0.6/v0.8 leave its connection open and
//!   unused, v0.12 closes it.
//! - Only then is the plugin added to the list, ordered by index (`sortPlugins`; among equal
//!   indices containerd's order is unspecified, the stand-in keeps arrival order). A second
//!   plugin with the same name and index is simply another entry: containerd does not
//!   deduplicate, both get every event they subscribed to.
//!
//! # Pod events (`StateChange`, `plugin.StateChange`, `isFatalError`)
//! - Each event goes to every plugin in index order that subscribed to it, each call with
//!   its own request-timeout deadline (2 s by default).
//! - A plugin that answers with any non-OK status (including `DeadlineExceeded` sent by the
//!   plugin itself) fails the operation with its message; later plugins are not called.
//! - A plugin that does not answer in time, or whose connection is closed or broken, is
//!   **closed and dropped, and the event goes on without it**: the operation succeeds. The
//!   [`EventReport`] and [`RuntimeStandIn::drops`] record it.
//! - A failed RUN is followed by STOP and REMOVE at once, their errors ignored
//!   (`nri_api_linux.go: RunPodSandbox`); the pod does not become known.
//! - containerd remembers in memory which pods it sent RUN for (`nri.go: setState`,
//!   `needsStopping`, `needsRemoval`): STOP goes only to a pod that ran, REMOVE only to one
//!   that ran or stopped, each at most once. After a runtime restart ([`RuntimeStandIn::restart`])
//!   that memory is gone, so pods from before it get no STOP or REMOVE.
//! - STOP and REMOVE carry the pod without namespaces and with pid 0; RUN carries
//!   `linux.namespaces[type=network].path`.
//! - Delivery style by NRI version ([`NriVersion`]): `StateChange{event, pod}` before v0.12;
//!   from v0.12 the dedicated `RunPodSandbox`/`StopPodSandbox`/`RemovePodSandbox` calls, each
//!   falling back to `StateChange` within the same deadline when the plugin answers
//!   `Unimplemented` (`plugin_type.go`), call by call.
//!
//! # Not modelled
//! Containers and their events, `UpdateContainers`, pre-installed (launched) plugins, the
//! plugin's second `RegisterPlugin`, the pods' real sandboxes (it sends whatever pods the test
//! gives it), and `Shutdown` (containerd never sends it; [`RuntimeStandIn::call_plugin_raw`]
//! can). Pods given with [`RuntimeStandIn::set_pods`] are known (they are in Synchronize) but
//! were not RUN by this runtime, like pods from before a restart.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::nri_wire::api::{
    ConfigureRequest, ConfigureResponse, Empty, Event, RegisterPluginRequest,
    RemovePodSandboxRequest, RemovePodSandboxResponse, RunPodSandboxRequest, RunPodSandboxResponse,
    StateChangeEvent, StopPodSandboxRequest, StopPodSandboxResponse, SynchronizeRequest,
    SynchronizeResponse,
};
pub use crate::nri_wire::api::{LinuxNamespace, LinuxPodSandbox, PodSandbox};
use crate::nri_wire::mux::{PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Trunk, TrunkOptions};
use crate::nri_wire::ttrpc::{self, CallError, Client, Server, Status, code};
use crate::nri_wire::{PLUGIN_SERVICE, RUNTIME_SERVICE};

/// Which NRI the stand-in's runtime vendors; it decides what goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NriVersion {
    /// NRI v0.6.1, as in containerd 1.7.24: `StateChange` events, no timeouts in
    /// `Configure`, Synchronize never split.
    V0_6,
    /// NRI v0.8.0, as in containerd 2.1.9: timeouts in `Configure`, Synchronize split when
    /// over 4 MiB.
    V0_8,
    /// NRI v0.12: also the dedicated pod sandbox calls, with `StateChange` as the fallback;
    /// a failed Synchronize closes the plugin.
    V0_12,
}

impl NriVersion {
    /// Every event a plugin may subscribe to: bits for events 1..LAST-1.
    pub fn valid_events(self) -> i32 {
        match self {
            NriVersion::V0_6 | NriVersion::V0_8 => (1 << 11) - 1,
            NriVersion::V0_12 => (1 << 14) - 1,
        }
    }
}

/// The stand-in's knobs; the defaults are containerd 1.7.24's.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// The NRI the runtime vendors.
    pub nri: NriVersion,
    /// How long a plugin has to call RegisterPlugin after connecting.
    pub registration_timeout: Duration,
    /// Deadline of every call to a plugin (`plugin_request_timeout`).
    pub request_timeout: Duration,
    /// Not containerd's behaviour, a test knob: split every Synchronize into parts of this
    /// many pods (NRI >= v0.8 only; containerd splits only messages over 4 MiB).
    pub sync_pods_per_message: Option<usize>,
    /// Runtime name sent in Configure.
    pub runtime_name: String,
    /// Runtime version sent in Configure.
    pub runtime_version: String,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            nri: NriVersion::V0_6,
            registration_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
            sync_pods_per_message: None,
            runtime_name: "netclaim-runtime-stand-in".to_owned(),
            runtime_version: "1.7.24".to_owned(),
        }
    }
}

/// A plugin that registered, was configured and synchronized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    /// Name from RegisterPlugin.
    pub name: String,
    /// Index from RegisterPlugin.
    pub idx: String,
    /// The event mask in force (0 from the plugin means every valid event).
    pub events: i32,
    /// Counts plugins added since the stand-in was created, from 1.
    pub session: u64,
}

/// What happened to one plugin's part of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The plugin answered OK.
    Answered,
    /// The plugin did not subscribe to this event; nothing was sent to it.
    NotSubscribed,
    /// The plugin answered with a non-OK status, which failed the operation.
    Failed,
    /// The plugin missed the deadline or its connection failed: it was closed and dropped
    /// and the event went on without it.
    Dropped(String),
}

/// One plugin's part of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The plugin.
    pub plugin: PluginInfo,
    /// The method called (`StateChange`, `RunPodSandbox`, ...); empty when none was.
    pub method: String,
    /// What happened.
    pub outcome: DeliveryOutcome,
}

/// What the runtime did with one pod event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventReport {
    /// Whether the runtime sent the event at all: STOP and REMOVE go only to pods this
    /// runtime ran and has not stopped (or removed) yet.
    pub sent: bool,
    /// Each plugin's part, in invocation order.
    pub deliveries: Vec<Delivery>,
}

impl EventReport {
    /// The outcome for the first plugin named `name`.
    pub fn outcome_for(&self, name: &str) -> Option<&DeliveryOutcome> {
        self.deliveries
            .iter()
            .find(|d| d.plugin.name == name)
            .map(|d| &d.outcome)
    }

    /// The deliveries whose plugin was dropped.
    pub fn dropped(&self) -> Vec<&Delivery> {
        self.deliveries
            .iter()
            .filter(|d| matches!(d.outcome, DeliveryOutcome::Dropped(_)))
            .collect()
    }
}

/// A plugin the runtime closed and dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginDrop {
    /// The plugin.
    pub plugin: PluginInfo,
    /// The call it failed, or `None` when its connection closed between calls.
    pub during: Option<String>,
    /// Why.
    pub reason: String,
}

/// Why a pod sandbox operation failed, as the runtime sees it.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A plugin answered with a non-OK status: the operation fails with it.
    #[error("NRI plugin {plugin} failed {method}: {message} (ttrpc code {code})")]
    Status {
        /// The plugin's name.
        plugin: String,
        /// The call that failed.
        method: String,
        /// ttrpc status code (2 Unknown for a handler error, 4 DeadlineExceeded, ...).
        code: i32,
        /// The plugin's message.
        message: String,
    },
    /// A plugin's answer could not be decoded (an error that fails the operation in Go too).
    #[error("NRI plugin {plugin} answered {method} with an undecodable message: {message}")]
    Undecodable {
        /// The plugin's name.
        plugin: String,
        /// The call.
        method: String,
        /// The decoding error.
        message: String,
    },
}

impl HookError {
    /// The ttrpc status code, when the plugin answered with one.
    pub fn code(&self) -> Option<i32> {
        match self {
            HookError::Status { code, .. } => Some(*code),
            HookError::Undecodable { .. } => None,
        }
    }

    /// The plugin's own message, when it answered with a status.
    pub fn plugin_message(&self) -> Option<&str> {
        match self {
            HookError::Status { message, .. } => Some(message),
            HookError::Undecodable { .. } => None,
        }
    }
}

/// containerd's memory of a pod (`nri.go: State`); absent means removed or never run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodState {
    Running,
    Stopped,
}

/// One plugin in the list.
struct PluginConn {
    info: PluginInfo,
    trunk: Trunk,
    client: Client,
}

struct Inner {
    socket_path: PathBuf,
    options: RuntimeOptions,
    /// The pods the runtime knows (its CRI sandbox store), sent in Synchronize.
    pods: Mutex<Vec<PodSandbox>>,
    /// containerd's in-memory NRI state per sandbox id.
    pod_states: Mutex<HashMap<String, PodState>>,
    /// The plugin list, in invocation order.
    plugins: Mutex<Vec<Arc<PluginConn>>>,
    plugin_list: watch::Sender<Vec<PluginInfo>>,
    /// containerd's NRI lock: events and Synchronize never overlap.
    nri_lock: tokio::sync::Mutex<()>,
    listener: Mutex<Option<CancellationToken>>,
    sessions: AtomicU64,
    last_error: Mutex<Option<String>>,
    drops: Mutex<Vec<PluginDrop>>,
    /// Connections not in the plugin list: being handshaken, or given up on without being
    /// closed (as containerd leaves a refused registration); a runtime stop closes them.
    abandoned: Mutex<Vec<Trunk>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn publish(&self, plugins: &[Arc<PluginConn>]) {
        self.plugin_list
            .send_replace(plugins.iter().map(|p| p.info.clone()).collect());
    }

    /// Closes and drops `plugin` if it is still in the list; records why.
    fn drop_plugin(&self, plugin: &Arc<PluginConn>, during: Option<&str>, reason: &str) {
        plugin.trunk.close(reason.to_owned());
        let mut plugins = lock(&self.plugins);
        let before = plugins.len();
        plugins.retain(|p| !Arc::ptr_eq(p, plugin));
        if plugins.len() != before {
            self.publish(&plugins);
            drop(plugins);
            tracing::info!(plugin = %plugin.info.name, ?during, reason, "NRI stand-in: closed a plugin");
            lock(&self.drops).push(PluginDrop {
                plugin: plugin.info.clone(),
                during: during.map(str::to_owned),
                reason: reason.to_owned(),
            });
        }
    }

    fn handshake_failed(&self, error: String) {
        tracing::warn!(%error, "NRI stand-in: plugin handshake failed");
        *lock(&self.last_error) = Some(error);
    }
}

/// The NRI runtime stand-in: listens on a unix socket, takes plugins as containerd does and
/// sends them pod sandbox events (see the [module docs](self)).
pub struct RuntimeStandIn {
    inner: Arc<Inner>,
}

impl RuntimeStandIn {
    /// Listens on `socket_path` (replacing a stale socket file) with containerd 1.7's
    /// defaults.
    pub async fn listen(socket_path: impl AsRef<Path>) -> io::Result<Self> {
        Self::listen_with(socket_path, RuntimeOptions::default()).await
    }

    /// Listens on `socket_path` with `options`.
    ///
    /// Errors: the socket cannot be bound; `sync_pods_per_message` with NRI v0.6 (which has
    /// no split Synchronize).
    pub async fn listen_with(
        socket_path: impl AsRef<Path>,
        options: RuntimeOptions,
    ) -> io::Result<Self> {
        if options.nri == NriVersion::V0_6 && options.sync_pods_per_message.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NRI v0.6 (containerd 1.7) has no split Synchronize",
            ));
        }
        let stand_in = RuntimeStandIn {
            inner: Arc::new(Inner {
                socket_path: socket_path.as_ref().to_owned(),
                options,
                pods: Mutex::new(Vec::new()),
                pod_states: Mutex::new(HashMap::new()),
                plugins: Mutex::new(Vec::new()),
                plugin_list: watch::channel(Vec::new()).0,
                nri_lock: tokio::sync::Mutex::new(()),
                listener: Mutex::new(None),
                sessions: AtomicU64::new(0),
                last_error: Mutex::new(None),
                drops: Mutex::new(Vec::new()),
                abandoned: Mutex::new(Vec::new()),
            }),
        };
        stand_in.start().await?;
        Ok(stand_in)
    }

    /// The socket path plugins connect to.
    pub fn socket_path(&self) -> &Path {
        &self.inner.socket_path
    }

    /// Starts listening again after [`RuntimeStandIn::stop`].
    ///
    /// Errors: the socket cannot be bound.
    pub async fn start(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.inner.socket_path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let listener = UnixListener::bind(&self.inner.socket_path)?;
        let token = CancellationToken::new();
        if let Some(old) = lock(&self.inner.listener).replace(token.clone()) {
            old.cancel();
        }
        tokio::spawn(accept_loop(self.inner.clone(), listener, token));
        Ok(())
    }

    /// Stops like a runtime process going down: every plugin connection closes, the
    /// listener stops and the socket file goes. Known pods are kept (they outlive a runtime
    /// restart); the runtime's memory of which pods it ran is not (see
    /// [`RuntimeStandIn::restart`]).
    pub fn stop(&self) {
        if let Some(token) = lock(&self.inner.listener).take() {
            token.cancel();
        }
        let plugins = std::mem::take(&mut *lock(&self.inner.plugins));
        for plugin in &plugins {
            plugin.trunk.close("the runtime stopped");
        }
        self.inner.publish(&[]);
        for trunk in lock(&self.inner.abandoned).drain(..) {
            trunk.close("the runtime stopped");
        }
        lock(&self.inner.pod_states).clear();
        let _ = std::fs::remove_file(&self.inner.socket_path);
    }

    /// [`RuntimeStandIn::stop`] then [`RuntimeStandIn::start`]: a runtime restart. Pods
    /// stay known (Synchronize lists them), but STOP and REMOVE for pods run before the
    /// restart are not sent, as with containerd.
    ///
    /// Errors: the socket cannot be bound.
    pub async fn restart(&self) -> io::Result<()> {
        self.stop();
        self.start().await
    }

    /// Closes every plugin connection, as containerd does to a plugin it gives up on (the
    /// listener stays).
    pub fn disconnect_plugins(&self) {
        let plugins = lock(&self.inner.plugins).clone();
        for plugin in &plugins {
            self.inner
                .drop_plugin(plugin, None, "disconnected by the test");
        }
    }

    /// Waits until at least one plugin is in the list.
    ///
    /// Errors: the timeout passed (with the last handshake error, if any).
    pub async fn wait_for_plugin(&self, timeout: Duration) -> Result<PluginInfo, String> {
        self.wait_for_session(1, timeout).await
    }

    /// Waits until a plugin added as number `session` or later is in the list: pass
    /// [`RuntimeStandIn::session_count`] + 1 taken before the plugin (re)connects.
    ///
    /// Errors: the timeout passed (with the last handshake error, if any).
    pub async fn wait_for_session(
        &self,
        session: u64,
        timeout: Duration,
    ) -> Result<PluginInfo, String> {
        let mut list = self.inner.plugin_list.subscribe();
        let found = tokio::time::timeout(
            timeout,
            list.wait_for(|plugins| plugins.iter().any(|p| p.session >= session)),
        )
        .await;
        match found {
            Ok(Ok(plugins)) => plugins
                .iter()
                .find(|p| p.session >= session)
                .cloned()
                .ok_or_else(|| "no plugin".to_owned()),
            _ => Err(format!(
                "no NRI plugin session >= {session} within {timeout:?} (last handshake error: {})",
                lock(&self.inner.last_error).as_deref().unwrap_or("none")
            )),
        }
    }

    /// How many plugins have been added so far (the last session number).
    pub fn session_count(&self) -> u64 {
        self.inner.sessions.load(Ordering::SeqCst)
    }

    /// Waits until no plugin is in the list.
    ///
    /// Errors: the timeout passed with a plugin still there.
    pub async fn wait_for_no_plugin(&self, timeout: Duration) -> Result<(), String> {
        let mut list = self.inner.plugin_list.subscribe();
        match tokio::time::timeout(timeout, list.wait_for(Vec::is_empty)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "NRI plugins still connected after {timeout:?}: {:?}",
                self.plugins()
            )),
        }
    }

    /// The plugins in the list, in invocation order.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.inner.plugin_list.borrow().clone()
    }

    /// Every plugin the runtime closed and dropped so far, oldest first.
    pub fn drops(&self) -> Vec<PluginDrop> {
        lock(&self.inner.drops).clone()
    }

    /// The last handshake failure, if any (bad registration, Configure refused, ...).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// Replaces the pods the runtime knows (sent on the next Synchronize). They count as
    /// not run by this runtime: no STOP or REMOVE is sent for them.
    pub fn set_pods(&self, pods: Vec<PodSandbox>) {
        *lock(&self.inner.pods) = pods;
    }

    /// The pods the runtime knows.
    pub fn pods(&self) -> Vec<PodSandbox> {
        lock(&self.inner.pods).clone()
    }

    /// RUN_POD_SANDBOX for `pod` (with its netns path, as after CNI setup). On success,
    /// including when a plugin was dropped on the way, the pod becomes known. A plugin's
    /// error fails it; STOP and REMOVE then follow at once.
    ///
    /// Errors: the first plugin error.
    pub async fn run_pod_sandbox(&self, pod: PodSandbox) -> Result<EventReport, HookError> {
        let result = self.deliver(Event::RunPodSandbox, &pod).await;
        lock(&self.inner.pod_states).insert(pod.id.clone(), PodState::Running);
        match result {
            Ok(report) => {
                let mut pods = lock(&self.inner.pods);
                pods.retain(|known| known.id != pod.id);
                pods.push(pod);
                Ok(report)
            }
            Err(error) => {
                let stripped = without_namespaces(pod);
                let _ = self.stop_pod_sandbox(stripped.clone()).await;
                let _ = self.remove_pod_sandbox(stripped).await;
                Err(error)
            }
        }
    }

    /// Not containerd's behaviour, a test knob: RUN_POD_SANDBOX for `pod` and nothing of
    /// what a runtime does around it (the pod does not become known, and a plugin's error
    /// is not followed by STOP and REMOVE), so that a test sees what the plugin's hook
    /// alone left behind.
    ///
    /// Errors: the first plugin error.
    pub async fn deliver_run_only(&self, pod: PodSandbox) -> Result<EventReport, HookError> {
        self.deliver(Event::RunPodSandbox, &pod).await
    }

    /// STOP_POD_SANDBOX, if this runtime ran the pod and has not stopped it yet (else
    /// nothing is sent). The pod goes without namespaces and with pid 0, as containerd
    /// sends it.
    ///
    /// Errors: the first plugin error.
    pub async fn stop_pod_sandbox(&self, pod: PodSandbox) -> Result<EventReport, HookError> {
        let state = lock(&self.inner.pod_states).get(&pod.id).copied();
        if state != Some(PodState::Running) {
            return Ok(EventReport::default());
        }
        let result = self
            .deliver(Event::StopPodSandbox, &without_namespaces(pod.clone()))
            .await;
        lock(&self.inner.pod_states).insert(pod.id, PodState::Stopped);
        result
    }

    /// REMOVE_POD_SANDBOX, if this runtime ran the pod and has not removed it yet (else
    /// nothing is sent); the pod is forgotten either way.
    ///
    /// Errors: the first plugin error.
    pub async fn remove_pod_sandbox(&self, pod: PodSandbox) -> Result<EventReport, HookError> {
        lock(&self.inner.pods).retain(|known| known.id != pod.id);
        let state = lock(&self.inner.pod_states).remove(&pod.id);
        if state.is_none() {
            return Ok(EventReport::default());
        }
        self.deliver(Event::RemovePodSandbox, &without_namespaces(pod))
            .await
    }

    /// Calls any `Plugin` method of the first plugin with a raw payload (protocol tests).
    ///
    /// Errors: no plugin, or the call's error.
    pub async fn call_plugin_raw(
        &self,
        method: &str,
        payload: Vec<u8>,
    ) -> Result<Bytes, CallError> {
        let plugin = lock(&self.inner.plugins)
            .first()
            .cloned()
            .ok_or_else(|| CallError::Closed("no NRI plugin is connected".to_owned()))?;
        let deadline = Instant::now() + self.inner.options.request_timeout;
        plugin
            .client
            .call(PLUGIN_SERVICE, method, payload, deadline)
            .await
    }

    /// Sends `event` to every subscribed plugin in order (see the module docs).
    async fn deliver(&self, event: Event, pod: &PodSandbox) -> Result<EventReport, HookError> {
        let inner = &self.inner;
        let _nri = inner.nri_lock.lock().await;
        let plugins = lock(&inner.plugins).clone();
        let mut report = EventReport {
            sent: true,
            deliveries: Vec::new(),
        };
        for plugin in plugins {
            let mut delivery = Delivery {
                plugin: plugin.info.clone(),
                method: String::new(),
                outcome: DeliveryOutcome::NotSubscribed,
            };
            if plugin.info.events & event_bit(event) == 0 {
                report.deliveries.push(delivery);
                continue;
            }
            let deadline = Instant::now() + inner.options.request_timeout;
            let (method, result) =
                call_event(inner.options.nri, &plugin, event, pod, deadline).await;
            delivery.method = method.to_owned();
            match result {
                Ok(()) => delivery.outcome = DeliveryOutcome::Answered,
                Err(CallError::Status { code, message }) => {
                    delivery.outcome = DeliveryOutcome::Failed;
                    report.deliveries.push(delivery);
                    return Err(HookError::Status {
                        plugin: plugin.info.name.clone(),
                        method: method.to_owned(),
                        code,
                        message,
                    });
                }
                Err(CallError::Protocol(message)) => {
                    return Err(HookError::Undecodable {
                        plugin: plugin.info.name.clone(),
                        method: method.to_owned(),
                        message,
                    });
                }
                Err(fatal) => {
                    let reason = fatal.to_string();
                    inner.drop_plugin(&plugin, Some(method), &reason);
                    delivery.outcome = DeliveryOutcome::Dropped(reason);
                }
            }
            report.deliveries.push(delivery);
        }
        Ok(report)
    }
}

impl Drop for RuntimeStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The subscription bit of an event.
fn event_bit(event: Event) -> i32 {
    1 << ((event as i32) - 1)
}

fn event_method(event: Event) -> &'static str {
    match event {
        Event::RunPodSandbox => "RunPodSandbox",
        Event::StopPodSandbox => "StopPodSandbox",
        _ => "RemovePodSandbox",
    }
}

/// One event to one plugin: the dedicated call (NRI v0.12) with the `StateChange` fallback,
/// or `StateChange`. Returns the method that answered last.
async fn call_event(
    nri: NriVersion,
    plugin: &PluginConn,
    event: Event,
    pod: &PodSandbox,
    deadline: Instant,
) -> (&'static str, Result<(), CallError>) {
    if nri >= NriVersion::V0_12 {
        let method = event_method(event);
        let pod = Some(pod.clone());
        let client = &plugin.client;
        let result = match event {
            Event::RunPodSandbox => client
                .call_typed::<_, RunPodSandboxResponse>(
                    PLUGIN_SERVICE,
                    method,
                    &RunPodSandboxRequest { pod },
                    deadline,
                )
                .await
                .map(drop),
            Event::StopPodSandbox => client
                .call_typed::<_, StopPodSandboxResponse>(
                    PLUGIN_SERVICE,
                    method,
                    &StopPodSandboxRequest { pod },
                    deadline,
                )
                .await
                .map(drop),
            _ => client
                .call_typed::<_, RemovePodSandboxResponse>(
                    PLUGIN_SERVICE,
                    method,
                    &RemovePodSandboxRequest { pod },
                    deadline,
                )
                .await
                .map(drop),
        };
        match result {
            Err(error) if error.status_code() == Some(code::UNIMPLEMENTED) => {}
            other => return (method, other),
        }
    }
    let request = StateChangeEvent {
        event: event as i32,
        pod: Some(pod.clone()),
    };
    let result = plugin
        .client
        .call_typed::<_, Empty>(PLUGIN_SERVICE, "StateChange", &request, deadline)
        .await
        .map(drop);
    ("StateChange", result)
}

async fn accept_loop(inner: Arc<Inner>, listener: UnixListener, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "NRI stand-in: accept failed");
                return;
            }
        };
        // One connection at a time, as containerd's accept goroutine does.
        tokio::select! {
            () = take_plugin(&inner, stream) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Registration, Configure, Synchronize; then the plugin joins the list.
async fn take_plugin(inner: &Arc<Inner>, stream: UnixStream) {
    let options = &inner.options;
    let started = Trunk::start(
        stream,
        &[PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN],
        TrunkOptions::go_runtime(),
    );
    let (trunk, mut conns) = match started {
        Ok(started) => started,
        Err(error) => return inner.handshake_failed(error.to_string()),
    };
    // Tracked until the plugin joins the list, so that a runtime stop closes it.
    lock(&inner.abandoned).push(trunk.clone());
    let (Some(runtime_conn), Some(plugin_conn)) = (conns.pop(), conns.pop()) else {
        return inner.handshake_failed("mux conns missing".to_owned());
    };
    let client = Client::new(trunk.clone(), plugin_conn);
    let (registered_tx, mut registered) = mpsc::unbounded_channel();
    let server = Arc::new(runtime_service(registered_tx));
    tokio::spawn(server.serve(trunk.clone(), runtime_conn));

    let registration = tokio::select! {
        registration = registered.recv() => registration,
        () = trunk.closed() => None,
        () = tokio::time::sleep(options.registration_timeout) => {
            trunk.close("plugin registration timed out");
            return inner.handshake_failed("plugin registration timed out".to_owned());
        }
    };
    let (name, idx) = match registration {
        Some(Ok(registered)) => registered,
        Some(Err(error)) => {
            // containerd returns without closing the connection: it stays open, unused.
            return inner.handshake_failed(format!("failed to register plugin: {error}"));
        }
        None => {
            return inner
                .handshake_failed("failed to register plugin, connection closed".to_owned());
        }
    };

    let timeouts = options.nri >= NriVersion::V0_8;
    let configure = ConfigureRequest {
        config: String::new(),
        runtime_name: options.runtime_name.clone(),
        runtime_version: options.runtime_version.clone(),
        registration_timeout: if timeouts {
            millis(options.registration_timeout)
        } else {
            0
        },
        request_timeout: if timeouts {
            millis(options.request_timeout)
        } else {
            0
        },
        nri_version: String::new(),
    };
    let deadline = Instant::now() + options.request_timeout;
    let configured = client
        .call_typed::<_, ConfigureResponse>(PLUGIN_SERVICE, "Configure", &configure, deadline)
        .await;
    let valid = options.nri.valid_events();
    let events = match configured {
        Ok(ConfigureResponse { events: 0 }) => valid,
        Ok(ConfigureResponse { events }) if events & !valid != 0 => {
            let error = format!("invalid plugin events: 0x{:x}", events & !valid);
            trunk.close(error.clone());
            return inner.handshake_failed(error);
        }
        Ok(ConfigureResponse { events }) => events,
        Err(error) => {
            let error = format!("failed to configure plugin: {error}");
            trunk.close(error.clone());
            return inner.handshake_failed(error);
        }
    };

    let _nri = inner.nri_lock.lock().await;
    let pods = lock(&inner.pods).clone();
    if let Err(failure) = synchronize(inner, &client, pods).await {
        let error = format!("failed to synchronize plugin: {}", failure.message);
        // NRI v0.6/v0.8 leave the connection open and unused.
        if failure.close || options.nri >= NriVersion::V0_12 {
            trunk.close(error.clone());
        }
        return inner.handshake_failed(error);
    }
    lock(&inner.abandoned).retain(|t| !t.is_same(&trunk));
    let session = inner.sessions.fetch_add(1, Ordering::SeqCst) + 1;
    let plugin = Arc::new(PluginConn {
        info: PluginInfo {
            name,
            idx,
            events,
            session,
        },
        trunk: trunk.clone(),
        client,
    });
    {
        let mut plugins = lock(&inner.plugins);
        plugins.push(plugin.clone());
        // Stable: equal indices keep their arrival order.
        plugins.sort_by(|a, b| a.info.idx.cmp(&b.info.idx));
        inner.publish(&plugins);
    }
    tracing::info!(session, name = %plugin.info.name, idx = %plugin.info.idx, "NRI stand-in: plugin connected and synchronized");
    // A connection that ends between calls leaves the list, as `removeClosedPlugins` does
    // under the NRI lock before the next event; one that ends during a call is dropped by
    // that call, which holds the lock, and so names it.
    let watcher = inner.clone();
    tokio::spawn(async move {
        plugin.trunk.closed().await;
        let _nri = watcher.nri_lock.lock().await;
        let reason = plugin
            .trunk
            .close_reason()
            .unwrap_or_else(|| "connection closed".to_owned());
        watcher.drop_plugin(&plugin, None, &reason);
    });
}

/// Why a Synchronize failed, and whether containerd closes the plugin for it.
struct SyncFailure {
    message: String,
    close: bool,
}

/// Sends `pods` in one message, or in parts (NRI >= v0.8) when it would be over ttrpc's
/// limit or the test asks for parts; all parts share one deadline.
async fn synchronize(
    inner: &Inner,
    client: &Client,
    pods: Vec<PodSandbox>,
) -> Result<(), SyncFailure> {
    let options = &inner.options;
    let splits = options.nri >= NriVersion::V0_8;
    let deadline = Instant::now() + options.request_timeout;
    let mut left: &[PodSandbox] = &pods;
    let mut per_message = options
        .sync_pods_per_message
        .unwrap_or(pods.len())
        .clamp(usize::from(!pods.is_empty()), pods.len().max(1));
    loop {
        let count = per_message.min(left.len());
        let more = splits && left.len() > count;
        let request = SynchronizeRequest {
            pods: left[..count].to_vec(),
            more,
        };
        let size = envelope_len(&request);
        if size > ttrpc::MAX_MESSAGE_LEN {
            // ttrpc refuses to send it (`OversizedMessageErr`) before anything goes out.
            if !splits {
                return Err(SyncFailure {
                    message: format!(
                        "message length {size} exceeds maximum message size of {}",
                        ttrpc::MAX_MESSAGE_LEN
                    ),
                    close: false,
                });
            }
            const MIN_OBJECTS_PER_MESSAGE: usize = 8;
            if count <= MIN_OBJECTS_PER_MESSAGE {
                return Err(SyncFailure {
                    message: "failed to synchronize plugin with split messages".to_owned(),
                    close: true,
                });
            }
            let factor = (ttrpc::MAX_MESSAGE_LEN as f64 / size as f64).min(0.9);
            per_message = (count as f64 * factor) as usize;
            if per_message < MIN_OBJECTS_PER_MESSAGE {
                per_message = MIN_OBJECTS_PER_MESSAGE / 2;
            }
            continue;
        }
        let reply = client
            .call_typed::<_, SynchronizeResponse>(PLUGIN_SERVICE, "Synchronize", &request, deadline)
            .await
            .map_err(|error| SyncFailure {
                message: error.to_string(),
                close: false,
            })?;
        if !more {
            return Ok(());
        }
        if !reply.update.is_empty() || reply.more != more {
            return Err(SyncFailure {
                message: "plugin does not handle split sync requests".to_owned(),
                close: true,
            });
        }
        left = &left[count..];
    }
}

/// The size of the ttrpc request that would carry `request`, which is what ttrpc checks.
fn envelope_len(request: &SynchronizeRequest) -> usize {
    ttrpc::Request {
        service: PLUGIN_SERVICE.to_owned(),
        method: "Synchronize".to_owned(),
        payload: request.encode_to_vec(),
        timeout_nano: i64::MAX,
        metadata: Vec::new(),
    }
    .encoded_len()
}

/// The `Runtime` service the plugin calls: RegisterPlugin, checked as containerd does
/// (NRI v0.6.1 texts), with the outcome passed to the waiting handshake.
fn runtime_service(registered: mpsc::UnboundedSender<Result<(String, String), String>>) -> Server {
    let mut server = Server::new();
    server.register(
        RUNTIME_SERVICE,
        "RegisterPlugin",
        move |request: RegisterPluginRequest, _| {
            let verdict = check_registration(&request);
            let _ = registered.send(match &verdict {
                Ok(()) => Ok((request.plugin_name.clone(), request.plugin_idx.clone())),
                Err((internal, _)) => Err(internal.clone()),
            });
            async move { verdict.map(|()| Empty {}).map_err(|(_, answer)| answer) }
        },
    );
    server
}

/// `Ok`, or (what containerd records, what it answers the plugin).
fn check_registration(request: &RegisterPluginRequest) -> Result<(), (String, Status)> {
    if request.plugin_name.is_empty() {
        return Err((
            "plugin \"external:??-plugin\" registered empty name".to_owned(),
            Status::unknown("invalid (empty) plugin name"),
        ));
    }
    let idx = request.plugin_idx.as_bytes();
    let problem = if idx.len() != 2 {
        Some(format!(
            "invalid plugin index {:?}, must be 2 digits",
            request.plugin_idx
        ))
    } else if !idx.iter().all(u8::is_ascii_digit) {
        Some(format!(
            "invalid plugin index {:?} (not [0-9][0-9])",
            request.plugin_idx
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err((
            format!(
                "plugin {:?} registered invalid index: {problem}",
                request.plugin_name
            ),
            Status::unknown(format!("invalid plugin index: {problem}")),
        )),
        None => Ok(()),
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The pod as STOP and REMOVE carry it: no namespaces, pid 0.
fn without_namespaces(mut pod: PodSandbox) -> PodSandbox {
    if let Some(linux) = pod.linux.as_mut() {
        linux.namespaces.clear();
    }
    pod.pid = 0;
    pod
}

/// A pod sandbox as the runtime describes it after CNI setup: `netns_path` becomes
/// `linux.namespaces[type=network].path` (next to the ipc/uts ones containerd also sends).
pub fn pod_sandbox(
    id: &str,
    name: &str,
    namespace: &str,
    uid: &str,
    netns_path: Option<&str>,
) -> PodSandbox {
    let mut namespaces = vec![
        LinuxNamespace {
            r#type: "ipc".to_owned(),
            path: String::new(),
        },
        LinuxNamespace {
            r#type: "uts".to_owned(),
            path: String::new(),
        },
    ];
    if let Some(path) = netns_path {
        namespaces.push(LinuxNamespace {
            r#type: "network".to_owned(),
            path: path.to_owned(),
        });
    }
    PodSandbox {
        id: id.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        namespace: namespace.to_owned(),
        runtime_handler: String::new(),
        linux: Some(LinuxPodSandbox { namespaces }),
        pid: 4242,
        ..PodSandbox::default()
    }
}

/// What the driver decodes from the bytes the stand-in sends for `pod`: the stand-in's
/// message encoded and decoded with the driver's own types.
///
/// # Panics
/// If the driver's types cannot decode the stand-in's encoding (a test failure).
pub fn driver_pod(pod: &PodSandbox) -> netclaim::nri::proto::PodSandbox {
    match netclaim::nri::proto::PodSandbox::decode(pod.encode_to_vec().as_slice()) {
        Ok(decoded) => decoded,
        Err(error) => panic!("the driver cannot decode the stand-in's PodSandbox: {error}"),
    }
}
