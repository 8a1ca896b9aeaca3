//! The NRI plugin: where an NRI event lands.
//!
//! [`NriPlugin::run`] connects to the runtime's NRI socket, registers, answers the runtime's
//! calls, hands pod sandbox events to a [`PodSandboxHandler`] (the driver's hooks), and
//! reconnects when the runtime restarts.
//!
//! Protocol, as containerd 1.7 speaks it (see `/work/shared/node-facts.md`):
//! 1. Connect; send `Runtime.RegisterPlugin{name, idx}` on conn 2 within the registration
//!    timeout (5 s in containerd).
//! 2. Serve `Plugin` on conn 1 from the start: `Configure` may arrive before RegisterPlugin's
//!    reply. It is answered with the event mask RUN/STOP/REMOVE_POD_SANDBOX (0x7).
//! 3. `Synchronize` with every live pod, possibly split into parts flagged `more`: the parts
//!    are gathered and the handler sees all pods at once.
//! 4. Events: `StateChange{event, pod}` (containerd 1.7), or the dedicated
//!    `RunPodSandbox`/`StopPodSandbox`/`RemovePodSandbox` calls of newer runtimes.
//!
//! Guarantees:
//! - Every request is answered before its deadline (`timeout_nano`, else the `request_timeout`
//!   from Configure, else the configured default, 2 s like containerd's): a handler gets a
//!   [`HookDeadline`] a little earlier than that, and one that has not answered by then is
//!   answered `DeadlineExceeded` (code 4) with the message of
//!   [`HookDeadline::expiry_message`]. A runtime disconnects a plugin that misses a deadline
//!   (and then runs pods without it), so answering "too slow" is always better than late.
//! - The answer and the handler agree: a handler reports success only after
//!   [`HookDeadline::commit`], which fails once the transport gave up on it; the handler
//!   then undoes its work.
//! - A handler error reaches the runtime as status `Unknown` (code 2) carrying the handler's
//!   message verbatim; for RunPodSandbox the runtime fails the sandbox with it.
//! - Calls this plugin does not implement are answered `Unimplemented` (code 12), which is
//!   what makes newer runtimes fall back to `StateChange`.
//!
//! Assumptions: a handler outliving its deadline keeps running to its end (it is not
//! cancelled half-way through a netlink transaction) and undoes what it did; the runtime
//! follows a failed RUN with STOP and REMOVE, so handlers must be idempotent.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::mux::{Mux, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
use super::proto::{
    ConfigureRequest, ConfigureResponse, Empty, Event, PodSandbox, RegisterPluginRequest,
    RemovePodSandboxRequest, RemovePodSandboxResponse, RunPodSandboxRequest, RunPodSandboxResponse,
    StateChangeEvent, StopPodSandboxRequest, StopPodSandboxResponse, SynchronizeRequest,
    SynchronizeResponse,
};
use super::ttrpc::{CallError, Client, RequestContext, Server, Status};
use crate::deadline::HookDeadline;

/// ttrpc service the runtime calls on the plugin (conn 1).
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
/// ttrpc service the plugin calls on the runtime (conn 2).
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// Where containerd listens for NRI plugins by default.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/nri/nri.sock";
/// The request deadline NRI uses when nobody says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The subscription bit of one event: `1 << (event - 1)`.
pub fn event_bit(event: Event) -> i32 {
    let number = event as i32;
    if (1..=31).contains(&number) {
        1 << (number - 1)
    } else {
        0
    }
}

/// The events netclaim subscribes to: RUN, STOP and REMOVE_POD_SANDBOX (0x7).
pub fn pod_sandbox_event_mask() -> i32 {
    event_bit(Event::RunPodSandbox)
        | event_bit(Event::StopPodSandbox)
        | event_bit(Event::RemovePodSandbox)
}

/// The driver side of NRI: what happens to pod sandboxes. Implemented by the driver's hooks.
///
/// Each method gets the request's [`HookDeadline`] (see the module docs); an `Err` fails the
/// runtime's operation with that message.
pub trait PodSandboxHandler: Send + Sync + 'static {
    /// All pods the runtime knows, after every (re)connection: reconcile state against them.
    fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        deadline: HookDeadline,
    ) -> impl Future<Output = ()> + Send;
    /// A sandbox was created and its network set up; the netns path is in
    /// `pod.linux.namespaces[type=network]`.
    fn run_pod_sandbox(
        &self,
        pod: PodSandbox,
        deadline: HookDeadline,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// A sandbox is stopping; its netns still exists but the pod carries no namespaces and
    /// pid 0, so the netns path must come from RUN or Synchronize.
    fn stop_pod_sandbox(
        &self,
        pod: PodSandbox,
        deadline: HookDeadline,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// A sandbox was removed; its netns is gone.
    fn remove_pod_sandbox(
        &self,
        pod: PodSandbox,
        deadline: HookDeadline,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether `event` for `pod` may have work here. `false` is answered at once on the
    /// request's own task, with no handler task, timer or deadline: what keeps a pod without
    /// netclaim claims from costing anything but this check. Must not block or wait on a
    /// lock. Default: every event may have work.
    fn concerns(&self, _event: Event, _pod: &PodSandbox) -> bool {
        true
    }
}

/// How to reach the runtime and who to say we are.
#[derive(Clone, Debug)]
pub struct NriConfig {
    /// The runtime's NRI socket.
    pub socket_path: PathBuf,
    /// Plugin name the runtime logs and orders by.
    pub plugin_name: String,
    /// Plugin index: exactly two digits; plugins are called in ascending order.
    pub plugin_idx: String,
    /// How long RegisterPlugin may take (containerd's registration timeout is 5 s).
    pub registration_timeout: Duration,
    /// First wait before reconnecting; doubles per failed attempt.
    pub reconnect_initial: Duration,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// The runtime's request deadline when it does not say (containerd's
    /// `plugin_request_timeout`; it sends it in Configure).
    pub request_timeout: Duration,
}

impl Default for NriConfig {
    fn default() -> Self {
        NriConfig {
            socket_path: PathBuf::from(DEFAULT_SOCKET_PATH),
            plugin_name: "netclaim".to_owned(),
            plugin_idx: "10".to_owned(),
            registration_timeout: Duration::from_secs(5),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl NriConfig {
    /// Checks what the runtime would refuse at registration.
    ///
    /// Errors: [`NriError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<(), NriError> {
        let idx = self.plugin_idx.as_bytes();
        if idx.len() != 2 || !idx.iter().all(u8::is_ascii_digit) {
            return Err(NriError::InvalidConfig(format!(
                "plugin_idx {:?} must be exactly two digits (00-99)",
                self.plugin_idx
            )));
        }
        if self.plugin_name.is_empty() || self.plugin_name.contains('/') {
            return Err(NriError::InvalidConfig(format!(
                "plugin_name {:?} must be non-empty and contain no '/'",
                self.plugin_name
            )));
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            return Err(NriError::InvalidConfig(
                "reconnect_initial must be non-zero and at most reconnect_max".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Errors of the NRI plugin.
#[derive(Debug, thiserror::Error)]
pub enum NriError {
    /// The configuration is unusable.
    #[error("invalid NRI configuration: {0}")]
    InvalidConfig(String),
    /// The runtime refused or did not answer the registration.
    #[error("registering with the NRI runtime: {0}")]
    Register(#[from] CallError),
    /// Opening or using the mux failed.
    #[error("NRI connection: {0}")]
    Mux(#[from] super::mux::MuxError),
    /// The runtime's Synchronize did not go through: it would send no events.
    #[error("NRI synchronization failed: {0}; reconnecting")]
    Synchronize(String),
}

/// Whether the plugin is registered with a runtime right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected (starting, or waiting to reconnect).
    Disconnected,
    /// Registered with the runtime; `session` counts registrations since start, from 1.
    Connected {
        /// Which registration this is: a reconnect increments it.
        session: u64,
    },
}

/// An NRI plugin serving one handler, reconnecting until told to stop.
pub struct NriPlugin<H> {
    config: NriConfig,
    handler: Arc<H>,
    state: watch::Sender<ConnectionState>,
}

impl<H: PodSandboxHandler> NriPlugin<H> {
    /// A plugin for `handler`.
    ///
    /// Errors: [`NriError::InvalidConfig`] when `config` fails [`NriConfig::validate`].
    pub fn new(config: NriConfig, handler: Arc<H>) -> Result<Self, NriError> {
        config.validate()?;
        let (state, _) = watch::channel(ConnectionState::Disconnected);
        Ok(NriPlugin {
            config,
            handler,
            state,
        })
    }

    /// Watches the connection state (for tests and health reporting).
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// Connects, serves and reconnects (capped exponential backoff, waiting for the socket to
    /// reappear) until `shutdown` is cancelled. Returns `Ok(())` on shutdown.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), NriError> {
        let mut backoff = self.config.reconnect_initial;
        let mut session = 0u64;
        let mut announced_wait = false;
        while !shutdown.is_cancelled() {
            match UnixStream::connect(&self.config.socket_path).await {
                Ok(stream) => {
                    announced_wait = false;
                    let started = tokio::time::Instant::now();
                    match self.run_session(stream, session + 1, &shutdown).await {
                        Ok(()) => {
                            session += 1;
                            // Start over only after a session that held: a runtime that drops
                            // us right after the handshake (say, a Synchronize that keeps
                            // failing) must not be hammered.
                            if started.elapsed() >= self.config.reconnect_max {
                                backoff = self.config.reconnect_initial;
                            }
                        }
                        Err(error) => tracing::warn!(%error, "NRI session failed"),
                    }
                    self.state.send_replace(ConnectionState::Disconnected);
                    crate::metrics::metrics().nri_connected.set(0);
                }
                Err(error) if !announced_wait => {
                    announced_wait = true;
                    tracing::info!(socket = %self.config.socket_path.display(), %error, "waiting for the NRI socket");
                }
                Err(error) => tracing::debug!(%error, "NRI socket still unavailable"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => break,
            }
            backoff = (backoff * 2).min(self.config.reconnect_max);
        }
        Ok(())
    }

    /// One connection: register, serve until the runtime goes away or shutdown. `Ok` once
    /// registered (whatever ends the session afterwards).
    async fn run_session(
        &self,
        stream: UnixStream,
        session: u64,
        shutdown: &CancellationToken,
    ) -> Result<(), NriError> {
        let mut mux = Mux::new(stream);
        let plugin_conn = mux.open(PLUGIN_SERVICE_CONN)?;
        let runtime_conn = mux.open(RUNTIME_SERVICE_CONN)?;
        let mux = mux.start();
        let runtime_shutdown = CancellationToken::new();
        let (synced_tx, mut synced) = watch::channel(SyncState::Pending);
        let server = Arc::new(build_server(
            self.handler.clone(),
            runtime_shutdown.clone(),
            self.config.request_timeout,
            synced_tx,
        ));
        let serving = tokio::spawn(server.serve(plugin_conn.reader, plugin_conn.writer));
        let client = Client::new(runtime_conn.reader, runtime_conn.writer);

        let registered = tokio::select! {
            result = self.register(&client) => result,
            () = shutdown.cancelled() => Ok(()),
        };
        if let Err(error) = registered {
            mux.close();
            serving.abort();
            return Err(error);
        }
        if !shutdown.is_cancelled() {
            tracing::info!(
                session,
                name = %self.config.plugin_name,
                idx = %self.config.plugin_idx,
                "registered with the NRI runtime"
            );
            // Connected only once the runtime's Synchronize went through: until then (and
            // for good after a failed one) the runtime sends this plugin no event.
            let limit = self.config.registration_timeout + self.config.request_timeout;
            let outcome = tokio::select! {
                state = tokio::time::timeout(limit, synced.wait_for(|s| *s != SyncState::Pending)) => {
                    match state {
                        Ok(Ok(state)) => state.clone(),
                        Ok(Err(_)) => SyncState::Failed("the session ended".to_owned()),
                        Err(_) => SyncState::Failed(format!("no Synchronize within {limit:?}")),
                    }
                }
                () = mux.closed() => SyncState::Failed("the runtime closed the connection".to_owned()),
                () = shutdown.cancelled() => SyncState::Pending,
            };
            if let SyncState::Failed(why) = outcome {
                mux.close();
                serving.abort();
                return Err(NriError::Synchronize(why));
            }
        }
        if !shutdown.is_cancelled() {
            self.state
                .send_replace(ConnectionState::Connected { session });
            let metrics = crate::metrics::metrics();
            metrics.nri_connected.set(1);
            metrics.nri_registrations.inc();
            tokio::select! {
                () = mux.closed() => tracing::warn!("NRI runtime closed the connection; reconnecting"),
                () = shutdown.cancelled() => {}
                () = runtime_shutdown.cancelled() => {
                    // Let our reply go out; the runtime closes the connection itself.
                    let _ = tokio::time::timeout(Duration::from_secs(1), mux.closed()).await;
                    tracing::info!("NRI runtime is shutting down; reconnecting when it is back");
                }
            }
        }
        mux.close();
        serving.abort();
        Ok(())
    }

    async fn register(&self, client: &Client) -> Result<(), NriError> {
        let request = RegisterPluginRequest {
            plugin_name: self.config.plugin_name.clone(),
            plugin_idx: self.config.plugin_idx.clone(),
            nri_version: String::new(),
        };
        client
            .call::<_, Empty>(
                RUNTIME_SERVICE,
                "RegisterPlugin",
                &request,
                self.config.registration_timeout,
            )
            .await?;
        Ok(())
    }
}

/// Runs an [`NriPlugin`] for `handler` until `shutdown` is cancelled.
///
/// Errors: an invalid `config`.
pub async fn run<H: PodSandboxHandler>(
    config: NriConfig,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Result<(), NriError> {
    NriPlugin::new(config, handler)?.run(shutdown).await
}

/// Per-connection state the handlers share.
struct Session<H> {
    handler: Arc<H>,
    /// Configure's `request_timeout`, in milliseconds (0: not told).
    request_timeout_ms: AtomicU64,
    /// The deadline when neither the request nor Configure says.
    default_timeout: Duration,
    /// Pods of a Synchronize split into parts, gathered until the last part.
    sync_pods: Mutex<Vec<PodSandbox>>,
    runtime_shutdown: CancellationToken,
    /// How the runtime's Synchronize went (the session counts as connected only after it).
    synced: watch::Sender<SyncState>,
}

/// Where a session's Synchronize stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SyncState {
    /// Not received (or not finished) yet.
    Pending,
    /// Answered OK: the runtime now sends this plugin its events.
    Done,
    /// Answered with an error: containerd then leaves the plugin out of its list but keeps
    /// the connection open, so no event would ever come.
    Failed(String),
}

impl<H: PodSandboxHandler> Session<H> {
    /// The deadline a request must be answered by.
    fn deadline(&self, context: &RequestContext) -> Duration {
        context
            .timeout
            .unwrap_or_else(|| match self.request_timeout_ms.load(Ordering::Relaxed) {
                0 => self.default_timeout,
                ms => Duration::from_millis(ms),
            })
    }

    fn configure(&self, request: ConfigureRequest) -> ConfigureResponse {
        tracing::info!(
            runtime = %request.runtime_name,
            version = %request.runtime_version,
            request_timeout_ms = request.request_timeout,
            "NRI runtime configured the plugin"
        );
        // containerd sends these in milliseconds.
        if let Ok(ms) = u64::try_from(request.request_timeout) {
            self.request_timeout_ms.store(ms, Ordering::Relaxed);
        }
        ConfigureResponse {
            events: pod_sandbox_event_mask(),
        }
    }

    async fn synchronize(
        &self,
        request: SynchronizeRequest,
        context: RequestContext,
    ) -> Result<SynchronizeResponse, Status> {
        let pods = {
            let mut gathered = self
                .sync_pods
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            gathered.extend(request.pods);
            if request.more {
                // containerd requires `more` echoed back to accept a split synchronization.
                return Ok(SynchronizeResponse { more: true });
            }
            std::mem::take(&mut *gathered)
        };
        tracing::info!(pods = pods.len(), "NRI synchronize");
        let handler = self.handler.clone();
        let answered = within_deadline(
            "Synchronize",
            self.deadline(&context),
            move |deadline| async move {
                handler.synchronize(pods, deadline.clone()).await;
                deadline.commit();
                Ok(())
            },
        )
        .await;
        self.synced.send_replace(match &answered {
            Ok(()) => SyncState::Done,
            Err(status) => SyncState::Failed(status.message.clone()),
        });
        answered?;
        Ok(SynchronizeResponse { more: false })
    }

    async fn pod_event(
        &self,
        event: Event,
        pod: Option<PodSandbox>,
        context: RequestContext,
    ) -> Result<(), Status> {
        let Some(pod) = pod else {
            return Err(Status::invalid_argument(format!(
                "{} without a pod",
                context.method
            )));
        };
        tracing::debug!(?event, pod = %pod.id, name = %pod.name, namespace = %pod.namespace, "NRI pod event");
        let Some(what) = hook_name(event) else {
            // Not subscribed; a runtime sending it anyway gets a harmless no-op.
            tracing::debug!(event = ?event, "ignoring an NRI event netclaim did not subscribe to");
            return Ok(());
        };
        let started = tokio::time::Instant::now();
        let sandbox = pod.id.clone();
        let answered = if self.handler.concerns(event, &pod) {
            let handler = self.handler.clone();
            within_deadline(what, self.deadline(&context), move |deadline| async move {
                match event {
                    Event::RunPodSandbox => handler.run_pod_sandbox(pod, deadline).await,
                    Event::StopPodSandbox => handler.stop_pod_sandbox(pod, deadline).await,
                    _ => handler.remove_pod_sandbox(pod, deadline).await,
                }
            })
            .await
        } else {
            // Nothing here for this pod: answered on this task, no handler task or timer.
            crate::metrics::metrics().observe_hook(what, true, started.elapsed());
            Ok(())
        };
        // The time netclaim itself spent on the event, which every pod queued behind it in
        // the runtime pays too (benches read it: test/benches/pod_start.rs).
        tracing::debug!(
            ?event,
            pod = %sandbox,
            elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            ok = answered.is_ok(),
            "NRI hook answered"
        );
        answered
    }

    async fn state_change(
        &self,
        request: StateChangeEvent,
        context: RequestContext,
    ) -> Result<Empty, Status> {
        let event = Event::try_from(request.event).unwrap_or(Event::Unknown);
        self.pod_event(event, request.pod, context).await?;
        Ok(Empty {})
    }
}

/// How long a handler may run when the request must be answered within `deadline`: keep a
/// tenth (50 ms to 500 ms) for the reply to travel back.
pub fn handler_budget(deadline: Duration) -> Duration {
    let margin = (deadline / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
    deadline.saturating_sub(margin)
}

/// Runs `work` in its own task with a [`HookDeadline`] at the handler budget of `deadline`,
/// and waits for it at most that long.
///
/// The task is not cancelled when the wait ends: stopping a hook half-way could leave a NIC
/// half-moved. Instead the deadline is expired, so the hook cannot commit and undoes what it
/// did; the runtime follows a failed RUN with STOP and REMOVE.
/// The name hooks are logged and counted under, for the events netclaim subscribes to.
fn hook_name(event: Event) -> Option<&'static str> {
    match event {
        Event::RunPodSandbox => Some("RunPodSandbox"),
        Event::StopPodSandbox => Some("StopPodSandbox"),
        Event::RemovePodSandbox => Some("RemovePodSandbox"),
        _ => None,
    }
}

async fn within_deadline<W, F>(
    what: &'static str,
    deadline: Duration,
    work: W,
) -> Result<(), Status>
where
    W: FnOnce(HookDeadline) -> F,
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let started = tokio::time::Instant::now();
    let budget = handler_budget(deadline);
    let hook_deadline = HookDeadline::for_runtime(what, budget, deadline);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let future = work(hook_deadline.clone());
    let task = tokio::spawn(async move {
        let result = future.await;
        if let Err(late) = done_tx.send(result) {
            // Nobody waits any more: the runtime was answered DeadlineExceeded.
            tracing::warn!(what, result = ?late, "NRI handler finished after its deadline");
        }
    });
    let outcome = match tokio::time::timeout(budget, &mut done_rx).await {
        Ok(outcome) => outcome,
        Err(_) if hook_deadline.expire() => {
            tracing::warn!(
                what,
                ?budget,
                "NRI handler exceeded its deadline; answering DeadlineExceeded"
            );
            crate::metrics::metrics().observe_hook(what, false, started.elapsed());
            return Err(Status::deadline_exceeded(
                hook_deadline.expiry_message("its work was still running (it is being undone)"),
            ));
        }
        // The handler committed just as the time ran out: its answer is on its way.
        Err(_) => done_rx.await,
    };
    tracing::debug!(
        what,
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "NRI call answered"
    );
    let answered = match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => {
            tracing::warn!(what, %message, "NRI handler failed");
            Err(Status::unknown(message))
        }
        Err(_) => {
            // The sender is only dropped unsent when the task panicked.
            let join_error = match task.await {
                Err(error) => error.to_string(),
                Ok(()) => "handler ended without a result".to_owned(),
            };
            tracing::error!(what, %join_error, "NRI handler panicked");
            Err(Status::unknown(format!(
                "netclaim: {what} handler failed: {join_error}"
            )))
        }
    };
    crate::metrics::metrics().observe_hook(what, answered.is_ok(), started.elapsed());
    answered
}

/// The `Plugin` service: Configure, Synchronize, Shutdown, StateChange and the dedicated pod
/// sandbox calls; anything else answers `Unimplemented`.
fn build_server<H: PodSandboxHandler>(
    handler: Arc<H>,
    runtime_shutdown: CancellationToken,
    default_timeout: Duration,
    synced: watch::Sender<SyncState>,
) -> Server {
    let session = Arc::new(Session {
        handler,
        request_timeout_ms: AtomicU64::new(0),
        default_timeout,
        sync_pods: Mutex::new(Vec::new()),
        runtime_shutdown,
        synced,
    });
    let mut server = Server::new();
    let s = session.clone();
    server.register(
        PLUGIN_SERVICE,
        "Configure",
        move |request: ConfigureRequest, _| {
            let response = s.configure(request);
            async move { Ok(response) }
        },
    );
    let s = session.clone();
    server.register(
        PLUGIN_SERVICE,
        "Synchronize",
        move |request: SynchronizeRequest, context| {
            let s = s.clone();
            async move { s.synchronize(request, context).await }
        },
    );
    let s = session.clone();
    server.register(PLUGIN_SERVICE, "Shutdown", move |_: Empty, _| {
        s.runtime_shutdown.cancel();
        async { Ok(Empty {}) }
    });
    let s = session.clone();
    server.register(
        PLUGIN_SERVICE,
        "StateChange",
        move |request: StateChangeEvent, context| {
            let s = s.clone();
            async move { s.state_change(request, context).await }
        },
    );
    let s = session.clone();
    server.register(
        PLUGIN_SERVICE,
        "RunPodSandbox",
        move |request: RunPodSandboxRequest, context| {
            let s = s.clone();
            async move {
                s.pod_event(Event::RunPodSandbox, request.pod, context)
                    .await?;
                Ok(RunPodSandboxResponse {})
            }
        },
    );
    let s = session.clone();
    server.register(
        PLUGIN_SERVICE,
        "StopPodSandbox",
        move |request: StopPodSandboxRequest, context| {
            let s = s.clone();
            async move {
                s.pod_event(Event::StopPodSandbox, request.pod, context)
                    .await?;
                Ok(StopPodSandboxResponse {})
            }
        },
    );
    let s = session;
    server.register(
        PLUGIN_SERVICE,
        "RemovePodSandbox",
        move |request: RemovePodSandboxRequest, context| {
            let s = s.clone();
            async move {
                s.pod_event(Event::RemovePodSandbox, request.pod, context)
                    .await?;
                Ok(RemovePodSandboxResponse {})
            }
        },
    );
    server
}

/// The network namespace path of a pod, when the runtime sent one (RUN and Synchronize do;
/// STOP and REMOVE do not).
pub fn network_namespace_path(pod: &PodSandbox) -> Option<&str> {
    pod.linux
        .as_ref()?
        .namespaces
        .iter()
        .find(|namespace| namespace.r#type == "network" && !namespace.path.is_empty())
        .map(|namespace| namespace.path.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_mask_is_run_stop_remove() {
        assert_eq!(pod_sandbox_event_mask(), 0x7);
        assert_eq!(event_bit(Event::Unknown), 0);
        assert_eq!(event_bit(Event::CreateContainer), 0x8);
    }

    #[test]
    fn plugin_idx_must_be_two_digits() {
        for bad in ["", "1", "100", "a1", "1 ", "٠١"] {
            let config = NriConfig {
                plugin_idx: bad.to_owned(),
                ..NriConfig::default()
            };
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains("plugin_idx"), "{err}");
        }
        for good in ["00", "10", "99"] {
            NriConfig {
                plugin_idx: good.to_owned(),
                ..NriConfig::default()
            }
            .validate()
            .unwrap();
        }
        let nameless = NriConfig {
            plugin_name: String::new(),
            ..NriConfig::default()
        };
        assert!(nameless.validate().is_err());
    }

    #[test]
    fn handler_budget_leaves_room_for_the_reply() {
        assert_eq!(
            handler_budget(Duration::from_secs(2)),
            Duration::from_millis(1800)
        );
        assert_eq!(
            handler_budget(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(
            handler_budget(Duration::from_secs(60)),
            Duration::from_millis(59_500)
        );
        assert_eq!(handler_budget(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn handlers_are_answered_within_their_deadline() {
        let deadline = Duration::from_millis(100);
        let ok = within_deadline("Ok", deadline, |d| async move {
            assert!(d.commit());
            Ok(())
        })
        .await;
        assert_eq!(ok, Ok(()));
        let failed = within_deadline("Err", deadline, |_| async {
            Err("eth1 is gone".to_owned())
        })
        .await;
        assert_eq!(failed, Err(Status::unknown("eth1 is gone")));
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let slow = within_deadline("Slow", deadline, |d| async move {
            // Still working when the transport gives up: the commit must fail.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = seen_tx.send(d.commit());
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(slow.code, crate::nri::ttrpc::code::DEADLINE_EXCEEDED);
        assert!(
            slow.message.contains("plugin_request_timeout"),
            "{}",
            slow.message
        );
        assert_eq!(
            seen_rx.await,
            Ok(false),
            "a hook that was answered for cannot commit"
        );
        let panicked = within_deadline("Panic", deadline, |_| async {
            let pods: Vec<PodSandbox> = Vec::new();
            // An out-of-bounds index: a handler bug must not take the plugin down.
            let _ = &pods[3];
            Ok(())
        })
        .await;
        let status = panicked.unwrap_err();
        assert_eq!(status.code, crate::nri::ttrpc::code::UNKNOWN);
        assert!(status.message.contains("Panic"), "{}", status.message);
    }

    /// Counts the handler calls; concerns only pods named "claimed".
    #[derive(Default)]
    struct Counting {
        runs: AtomicU64,
        stops: AtomicU64,
    }

    impl PodSandboxHandler for Counting {
        async fn synchronize(&self, _: Vec<PodSandbox>, _: HookDeadline) {}
        async fn run_pod_sandbox(&self, _: PodSandbox, _: HookDeadline) -> Result<(), String> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn stop_pod_sandbox(&self, _: PodSandbox, _: HookDeadline) -> Result<(), String> {
            self.stops.fetch_add(1, Ordering::SeqCst);
            Err("still attached".to_owned())
        }
        async fn remove_pod_sandbox(&self, _: PodSandbox, _: HookDeadline) -> Result<(), String> {
            Ok(())
        }
        fn concerns(&self, _: Event, pod: &PodSandbox) -> bool {
            pod.name == "claimed"
        }
    }

    #[tokio::test]
    async fn events_of_pods_the_handler_does_not_concern_are_answered_without_it() {
        let handler = Arc::new(Counting::default());
        let session = Session {
            handler: handler.clone(),
            request_timeout_ms: AtomicU64::new(0),
            default_timeout: Duration::from_secs(2),
            sync_pods: Mutex::default(),
            runtime_shutdown: CancellationToken::new(),
            synced: watch::channel(SyncState::Done).0,
        };
        let pod = |name: &str| PodSandbox {
            id: format!("{name}-sandbox"),
            name: name.to_owned(),
            ..PodSandbox::default()
        };
        let context = RequestContext::default;
        for event in [Event::RunPodSandbox, Event::StopPodSandbox] {
            let answered = session
                .pod_event(event, Some(pod("plain")), context())
                .await;
            assert_eq!(answered, Ok(()), "{event:?} of a pod without claims");
        }
        assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
        assert_eq!(handler.stops.load(Ordering::SeqCst), 0);

        let run = session
            .pod_event(Event::RunPodSandbox, Some(pod("claimed")), context())
            .await;
        assert_eq!(run, Ok(()));
        let stop = session
            .pod_event(Event::StopPodSandbox, Some(pod("claimed")), context())
            .await;
        assert_eq!(stop, Err(Status::unknown("still attached")));
        assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
        assert_eq!(handler.stops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn network_namespace_path_is_found_by_type() {
        use crate::nri::proto::{LinuxNamespace, LinuxPodSandbox};
        let mut pod = PodSandbox::default();
        assert_eq!(network_namespace_path(&pod), None);
        pod.linux = Some(LinuxPodSandbox {
            namespaces: vec![
                LinuxNamespace {
                    r#type: "ipc".into(),
                    path: "/proc/1/ns/ipc".into(),
                },
                LinuxNamespace {
                    r#type: "network".into(),
                    path: "/run/netns/cni-1".into(),
                },
            ],
        });
        assert_eq!(network_namespace_path(&pod), Some("/run/netns/cni-1"));
    }
}
