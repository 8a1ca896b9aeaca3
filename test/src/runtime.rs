//! An NRI runtime stand-in: the runtime side of containerd's NRI protocol, for tests and demos.
//!
//! It speaks the real wire protocol (the mux and ttrpc from `netclaim::nri`) over a real unix
//! socket and enforces what containerd 1.7 enforces:
//! - the plugin must call `RegisterPlugin` on conn 2 within the registration timeout, with a
//!   non-empty name and an index of exactly two digits;
//! - `Configure` on conn 1 (carrying the timeouts in milliseconds) must answer with an event
//!   mask that includes RUN, STOP and REMOVE_POD_SANDBOX;
//! - `Synchronize` sends every pod the stand-in knows, optionally split into parts flagged
//!   `more`, and requires the plugin to echo `more` on every part, as containerd does;
//! - every call has the request deadline (2 s by default); a plugin that misses it is
//!   disconnected, and a non-zero status fails the operation with the plugin's message;
//! - STOP and REMOVE carry the pod without namespaces and with pid 0; RUN carries
//!   `linux.namespaces[type=network].path`.
//!
//! Events go out as `StateChange` (containerd 1.7, [`EventStyle::StateChange`]) or as the
//! dedicated `RunPodSandbox`/`StopPodSandbox`/`RemovePodSandbox` calls of newer runtimes
//! ([`EventStyle::DedicatedRpc`]), falling back to `StateChange` when the plugin answers
//! `Unimplemented`.
//!
//! Not modelled: containers and their events, several plugins ordered by index (a new plugin
//! connection replaces the previous one), launching pre-installed plugins, `UpdateContainers`,
//! re-splitting a Synchronize on `ResourceExhausted`, and the pods' actual sandboxes (it sends
//! whatever pods the test gives it). With no plugin connected an event fails with
//! [`HookError::NoPlugin`] (containerd would simply go on), so a test cannot pass by accident.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use netclaim::nri::mux::{Mux, MuxHandle, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
use netclaim::nri::plugin::{PLUGIN_SERVICE, RUNTIME_SERVICE, pod_sandbox_event_mask};
use netclaim::nri::proto::{
    ConfigureRequest, ConfigureResponse, Empty, Event, LinuxNamespace, LinuxPodSandbox, PodSandbox,
    RegisterPluginRequest, RemovePodSandboxRequest, RemovePodSandboxResponse, RunPodSandboxRequest,
    RunPodSandboxResponse, StateChangeEvent, StopPodSandboxRequest, StopPodSandboxResponse,
    SynchronizeRequest, SynchronizeResponse,
};
use netclaim::nri::ttrpc::{CallError, Client, Server, Status, code};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How the stand-in delivers pod sandbox events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventStyle {
    /// `StateChange{event, pod}`, as containerd 1.7 (NRI 0.8) does.
    StateChange,
    /// Dedicated `RunPodSandbox`/`StopPodSandbox`/`RemovePodSandbox` calls (NRI >= 0.12),
    /// falling back to `StateChange` once the plugin answers `Unimplemented`.
    DedicatedRpc,
}

/// The stand-in's knobs; the defaults are containerd's.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Event delivery style.
    pub event_style: EventStyle,
    /// How long a plugin has to call RegisterPlugin after connecting.
    pub registration_timeout: Duration,
    /// Deadline of every call to the plugin.
    pub request_timeout: Duration,
    /// Split Synchronize into parts of this many pods (`None`: one message).
    pub sync_pods_per_message: Option<usize>,
    /// Runtime name sent in Configure.
    pub runtime_name: String,
    /// Runtime version sent in Configure.
    pub runtime_version: String,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            event_style: EventStyle::StateChange,
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
    /// Event mask from Configure.
    pub events: i32,
    /// Counts successful handshakes since the stand-in was created, from 1.
    pub session: u64,
}

/// Why a pod sandbox event failed, as the runtime sees it.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The plugin answered with a non-zero status: the sandbox operation fails with it.
    #[error("NRI plugin failed {method}: {message} (ttrpc code {code})")]
    Status {
        /// The call that failed.
        method: String,
        /// ttrpc status code (2 Unknown for a handler error, 4 DeadlineExceeded, ...).
        code: i32,
        /// The plugin's message.
        message: String,
    },
    /// The plugin did not answer in time; like containerd, the stand-in disconnected it.
    #[error("NRI plugin missed the {0:?} deadline and was disconnected")]
    DeadlineMissed(Duration),
    /// No plugin is connected.
    #[error("no NRI plugin is connected")]
    NoPlugin,
    /// The connection failed mid-call.
    #[error("NRI plugin connection: {0}")]
    Transport(String),
}

impl HookError {
    /// The ttrpc status code, when the plugin answered with one.
    pub fn code(&self) -> Option<i32> {
        match self {
            HookError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The plugin's own message, when it answered with a status.
    pub fn plugin_message(&self) -> Option<&str> {
        match self {
            HookError::Status { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// One connected, synchronized plugin.
struct PluginConn {
    info: PluginInfo,
    client: Client,
    mux: MuxHandle,
    dedicated_rpcs: AtomicBool,
}

struct Inner {
    socket_path: PathBuf,
    options: RuntimeOptions,
    pods: Mutex<Vec<PodSandbox>>,
    active: Mutex<Option<Arc<PluginConn>>>,
    active_info: watch::Sender<Option<PluginInfo>>,
    listener: Mutex<Option<CancellationToken>>,
    sessions: AtomicU64,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The NRI runtime stand-in: listens on a unix socket, handshakes with a plugin and sends it
/// pod sandbox events.
pub struct RuntimeStandIn {
    inner: Arc<Inner>,
}

impl RuntimeStandIn {
    /// Listens on `socket_path` (replacing a stale socket file) with containerd's defaults.
    pub async fn listen(socket_path: impl AsRef<Path>) -> io::Result<Self> {
        Self::listen_with(socket_path, RuntimeOptions::default()).await
    }

    /// Listens on `socket_path` with `options`.
    pub async fn listen_with(
        socket_path: impl AsRef<Path>,
        options: RuntimeOptions,
    ) -> io::Result<Self> {
        let (active_info, _) = watch::channel(None);
        let stand_in = RuntimeStandIn {
            inner: Arc::new(Inner {
                socket_path: socket_path.as_ref().to_owned(),
                options,
                pods: Mutex::new(Vec::new()),
                active: Mutex::new(None),
                active_info,
                listener: Mutex::new(None),
                sessions: AtomicU64::new(0),
                last_error: Mutex::new(None),
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

    /// Stops like a runtime going down: drops every plugin connection, stops listening and
    /// removes the socket file. Known pods are kept (they outlive a runtime restart).
    pub fn stop(&self) {
        if let Some(token) = lock(&self.inner.listener).take() {
            token.cancel();
        }
        self.disconnect_plugin();
        let _ = std::fs::remove_file(&self.inner.socket_path);
    }

    /// [`RuntimeStandIn::stop`] then [`RuntimeStandIn::start`]: a runtime restart.
    pub async fn restart(&self) -> io::Result<()> {
        self.stop();
        self.start().await
    }

    /// Drops the current plugin connection (the listener stays).
    pub fn disconnect_plugin(&self) {
        deactivate(&self.inner, None);
    }

    /// Waits until a plugin has registered, been configured and synchronized.
    ///
    /// Errors: the timeout passed (with the last handshake error, if any).
    pub async fn wait_for_plugin(&self, timeout: Duration) -> Result<PluginInfo, String> {
        self.wait_for_session(1, timeout).await
    }

    /// Waits until a plugin handshake numbered `session` or later has completed and that plugin
    /// is connected: after a restart, pass the previous session + 1.
    ///
    /// Errors: the timeout passed (with the last handshake error, if any).
    pub async fn wait_for_session(
        &self,
        session: u64,
        timeout: Duration,
    ) -> Result<PluginInfo, String> {
        let mut info = self.inner.active_info.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            info.wait_for(|info| info.as_ref().is_some_and(|info| info.session >= session)),
        )
        .await;
        match waited {
            Ok(Ok(info)) => info.clone().ok_or_else(|| "no plugin".to_owned()),
            _ => Err(format!(
                "no NRI plugin session >= {session} within {timeout:?} (last handshake error: {})",
                lock(&self.inner.last_error).as_deref().unwrap_or("none")
            )),
        }
    }

    /// Waits until no plugin is connected (it left, or was disconnected).
    ///
    /// Errors: the timeout passed with a plugin still connected.
    pub async fn wait_for_no_plugin(&self, timeout: Duration) -> Result<(), String> {
        let mut info = self.inner.active_info.subscribe();
        match tokio::time::timeout(timeout, info.wait_for(Option::is_none)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "an NRI plugin is still connected after {timeout:?}"
            )),
        }
    }

    /// The last handshake failure, if any (bad registration, Configure refused, ...).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// Replaces the pods the runtime knows (sent on the next Synchronize).
    pub fn set_pods(&self, pods: Vec<PodSandbox>) {
        *lock(&self.inner.pods) = pods;
    }

    /// The pods the runtime knows.
    pub fn pods(&self) -> Vec<PodSandbox> {
        lock(&self.inner.pods).clone()
    }

    /// Sends RUN_POD_SANDBOX for `pod` (with its netns path, as after CNI setup). On success
    /// the pod becomes known to the runtime.
    pub async fn run_pod_sandbox(&self, pod: PodSandbox) -> Result<(), HookError> {
        self.send_event(Event::RunPodSandbox, pod.clone()).await?;
        let mut pods = lock(&self.inner.pods);
        pods.retain(|known| known.id != pod.id);
        pods.push(pod);
        Ok(())
    }

    /// Sends STOP_POD_SANDBOX: the pod without namespaces and with pid 0, as containerd does.
    pub async fn stop_pod_sandbox(&self, pod: PodSandbox) -> Result<(), HookError> {
        self.send_event(Event::StopPodSandbox, without_namespaces(pod))
            .await
    }

    /// Sends REMOVE_POD_SANDBOX (pod without namespaces); the pod is forgotten either way.
    pub async fn remove_pod_sandbox(&self, pod: PodSandbox) -> Result<(), HookError> {
        lock(&self.inner.pods).retain(|known| known.id != pod.id);
        self.send_event(Event::RemovePodSandbox, without_namespaces(pod))
            .await
    }

    /// Calls any `Plugin` method with a raw payload (for protocol tests).
    pub async fn call_plugin_raw(
        &self,
        method: &str,
        payload: Vec<u8>,
    ) -> Result<Bytes, CallError> {
        let conn = lock(&self.inner.active).clone().ok_or(CallError::Closed)?;
        conn.client
            .call_raw(
                PLUGIN_SERVICE,
                method,
                payload,
                self.inner.options.request_timeout,
            )
            .await
    }

    async fn send_event(&self, event: Event, pod: PodSandbox) -> Result<(), HookError> {
        let conn = lock(&self.inner.active)
            .clone()
            .ok_or(HookError::NoPlugin)?;
        let timeout = self.inner.options.request_timeout;
        if self.inner.options.event_style == EventStyle::DedicatedRpc
            && conn.dedicated_rpcs.load(Ordering::Relaxed)
        {
            match call_dedicated(&conn.client, event, pod.clone(), timeout).await {
                Err(CallError::Status(status)) if status.code == code::UNIMPLEMENTED => {
                    conn.dedicated_rpcs.store(false, Ordering::Relaxed);
                }
                result => return self.outcome(&conn, event_method(event), result),
            }
        }
        let request = StateChangeEvent {
            event: event as i32,
            pod: Some(pod),
        };
        let result = conn
            .client
            .call::<_, Empty>(PLUGIN_SERVICE, "StateChange", &request, timeout)
            .await
            .map(drop);
        self.outcome(&conn, "StateChange", result)
    }

    /// Maps a call's result to what the runtime does: a missed deadline disconnects.
    fn outcome(
        &self,
        conn: &Arc<PluginConn>,
        method: &str,
        result: Result<(), CallError>,
    ) -> Result<(), HookError> {
        match result {
            Ok(()) => Ok(()),
            Err(CallError::Status(Status { code, message })) => Err(HookError::Status {
                method: method.to_owned(),
                code,
                message,
            }),
            Err(CallError::Timeout(deadline)) => {
                deactivate(&self.inner, Some(conn));
                Err(HookError::DeadlineMissed(deadline))
            }
            Err(other) => {
                deactivate(&self.inner, Some(conn));
                Err(HookError::Transport(other.to_string()))
            }
        }
    }
}

impl Drop for RuntimeStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

fn event_method(event: Event) -> &'static str {
    match event {
        Event::RunPodSandbox => "RunPodSandbox",
        Event::StopPodSandbox => "StopPodSandbox",
        _ => "RemovePodSandbox",
    }
}

async fn call_dedicated(
    client: &Client,
    event: Event,
    pod: PodSandbox,
    timeout: Duration,
) -> Result<(), CallError> {
    let pod = Some(pod);
    match event {
        Event::RunPodSandbox => client
            .call::<_, RunPodSandboxResponse>(
                PLUGIN_SERVICE,
                "RunPodSandbox",
                &RunPodSandboxRequest { pod },
                timeout,
            )
            .await
            .map(drop),
        Event::StopPodSandbox => client
            .call::<_, StopPodSandboxResponse>(
                PLUGIN_SERVICE,
                "StopPodSandbox",
                &StopPodSandboxRequest { pod },
                timeout,
            )
            .await
            .map(drop),
        _ => client
            .call::<_, RemovePodSandboxResponse>(
                PLUGIN_SERVICE,
                "RemovePodSandbox",
                &RemovePodSandboxRequest { pod },
                timeout,
            )
            .await
            .map(drop),
    }
}

/// Drops the active plugin (only if it is still `only`, when given) and closes its connection.
fn deactivate(inner: &Inner, only: Option<&Arc<PluginConn>>) {
    let mut active = lock(&inner.active);
    let is_target = match (active.as_ref(), only) {
        (Some(current), Some(only)) => Arc::ptr_eq(current, only),
        (Some(_), None) => true,
        (None, _) => false,
    };
    if is_target {
        if let Some(conn) = active.take() {
            conn.mux.close();
        }
        inner.active_info.send_replace(None);
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: UnixListener, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match stream {
            Ok((stream, _)) => {
                tokio::spawn(handle_connection(inner.clone(), stream, stop.child_token()));
            }
            Err(error) => {
                tracing::warn!(%error, "NRI stand-in: accept failed");
                return;
            }
        }
    }
}

/// One plugin connection: handshake, then stay active until it closes or the stand-in stops.
async fn handle_connection(inner: Arc<Inner>, stream: UnixStream, stop: CancellationToken) {
    let mut mux = Mux::new(stream);
    let (plugin_conn, runtime_conn) = match (
        mux.open(PLUGIN_SERVICE_CONN),
        mux.open(RUNTIME_SERVICE_CONN),
    ) {
        (Ok(plugin), Ok(runtime)) => (plugin, runtime),
        _ => return,
    };
    let mux = mux.start();
    let (registered_tx, registered_rx) = oneshot::channel();
    let server = Arc::new(runtime_service(inner.clone(), registered_tx));
    let serving = tokio::spawn(server.serve(runtime_conn.reader, runtime_conn.writer));
    let client = Client::new(plugin_conn.reader, plugin_conn.writer);

    let handshake = tokio::select! {
        result = handshake(&inner, &client, registered_rx) => result,
        () = stop.cancelled() => Err("the runtime stopped".to_owned()),
        () = mux.closed() => Err("the plugin closed the connection during the handshake".to_owned()),
    };
    let (name, idx, events) = match handshake {
        Ok(done) => done,
        Err(error) => {
            tracing::warn!(%error, "NRI stand-in: plugin handshake failed");
            *lock(&inner.last_error) = Some(error);
            mux.close();
            serving.abort();
            return;
        }
    };
    let session = inner.sessions.fetch_add(1, Ordering::Relaxed) + 1;
    let info = PluginInfo {
        name,
        idx,
        events,
        session,
    };
    let conn = Arc::new(PluginConn {
        info: info.clone(),
        client,
        mux: mux.clone(),
        dedicated_rpcs: AtomicBool::new(true),
    });
    {
        let mut active = lock(&inner.active);
        if let Some(previous) = active.replace(conn.clone()) {
            previous.mux.close();
        }
        inner.active_info.send_replace(Some(info));
    }
    tracing::info!(session, name = %conn.info.name, "NRI stand-in: plugin synchronized");
    tokio::select! {
        () = mux.closed() => {}
        () = stop.cancelled() => {}
    }
    deactivate(&inner, Some(&conn));
    serving.abort();
}

/// The `Runtime` service the plugin calls: RegisterPlugin, validated as containerd does.
///
/// A refused registration is answered with the error and recorded as the last handshake
/// error; the connection then stays open until the registration timeout (containerd closes
/// it at once).
fn runtime_service(inner: Arc<Inner>, registered: oneshot::Sender<(String, String)>) -> Server {
    let registered = Mutex::new(Some(registered));
    let mut server = Server::new();
    server.register(
        RUNTIME_SERVICE,
        "RegisterPlugin",
        move |request: RegisterPluginRequest, _| {
            let verdict = check_registration(&request);
            match &verdict {
                Ok(()) => {
                    if let Some(tx) = lock(&registered).take() {
                        let _ = tx.send((request.plugin_name, request.plugin_idx));
                    }
                }
                Err(status) => *lock(&inner.last_error) = Some(status.message.clone()),
            }
            async move { verdict.map(|()| Empty {}) }
        },
    );
    server
}

fn check_registration(request: &RegisterPluginRequest) -> Result<(), Status> {
    let idx = request.plugin_idx.as_bytes();
    if idx.len() != 2 || !idx.iter().all(u8::is_ascii_digit) {
        return Err(Status::invalid_argument(format!(
            "invalid plugin index: {:?} is not two digits",
            request.plugin_idx
        )));
    }
    if request.plugin_name.is_empty() {
        return Err(Status::invalid_argument("invalid plugin name: empty"));
    }
    Ok(())
}

/// Registration (within its timeout), Configure, Synchronize.
async fn handshake(
    inner: &Inner,
    client: &Client,
    registered: oneshot::Receiver<(String, String)>,
) -> Result<(String, String, i32), String> {
    let options = &inner.options;
    let (name, idx) = match tokio::time::timeout(options.registration_timeout, registered).await {
        Ok(Ok(registration)) => registration,
        Ok(Err(_)) => return Err("the plugin connection ended before registration".to_owned()),
        Err(_) => {
            return Err(format!(
                "plugin registration timed out after {:?}",
                options.registration_timeout
            ));
        }
    };
    let configure = ConfigureRequest {
        config: String::new(),
        runtime_name: options.runtime_name.clone(),
        runtime_version: options.runtime_version.clone(),
        registration_timeout: millis(options.registration_timeout),
        request_timeout: millis(options.request_timeout),
        nri_version: String::new(),
    };
    let configured: ConfigureResponse = client
        .call(
            PLUGIN_SERVICE,
            "Configure",
            &configure,
            options.request_timeout,
        )
        .await
        .map_err(|error| format!("failed to configure plugin: {error}"))?;
    // An empty mask means "everything", as in containerd.
    let wanted = pod_sandbox_event_mask();
    if configured.events != 0 && configured.events & wanted != wanted {
        return Err(format!(
            "plugin subscribed to events 0x{:x}, which lacks RUN/STOP/REMOVE_POD_SANDBOX (0x{wanted:x})",
            configured.events
        ));
    }
    synchronize(inner, client).await?;
    Ok((name, idx, configured.events))
}

/// Sends the known pods, split as configured; the plugin must echo `more` on every part.
async fn synchronize(inner: &Inner, client: &Client) -> Result<(), String> {
    let pods = lock(&inner.pods).clone();
    let per_message = inner
        .options
        .sync_pods_per_message
        .unwrap_or(pods.len())
        .max(1);
    let mut parts: Vec<Vec<PodSandbox>> = pods
        .chunks(per_message)
        .map(<[PodSandbox]>::to_vec)
        .collect();
    if parts.is_empty() {
        parts.push(Vec::new());
    }
    let count = parts.len();
    for (index, part) in parts.into_iter().enumerate() {
        let more = index + 1 < count;
        let request = SynchronizeRequest { pods: part, more };
        let reply: SynchronizeResponse = client
            .call(
                PLUGIN_SERVICE,
                "Synchronize",
                &request,
                inner.options.request_timeout,
            )
            .await
            .map_err(|error| format!("failed to synchronize plugin: {error}"))?;
        if reply.more != more {
            return Err("plugin does not handle split sync requests".to_owned());
        }
    }
    Ok(())
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
