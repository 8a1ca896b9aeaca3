//! `netclaim run`: the node daemon's lifecycle.
//!
//! Start-up order, each step failing the start with a message naming what was wrong:
//! 1. configuration (an invalid `--filter`, a `--cni-timeout-seconds` that cannot fit in an
//!    NRI hook, an empty `--cni-allowed-plugins` stop here) and the host tools
//!    (`nsenter`, `ethtool`) resolved to absolute paths once ([`crate::exec`]; a missing
//!    one is logged and fails only the claims that need it),
//! 2. `/metrics`, `/healthz` and `/readyz` ([`crate::serve`]), and the Kubernetes client,
//! 3. the DRA kubelet plugin, registered with a [`Deferred`] driver: the kubelet's calls
//!    wait until step 9,
//! 4. the node's active-instance lock, asking a running instance to hand over first (a
//!    rolling update, [`crate::handover`]),
//! 5. the checkpoint of prepared claims (a corrupt record stops the start unless
//!    `--discard-corrupt-checkpoint`), read on a blocking thread,
//! 6. the claims' CDI specs and device metadata files: those of claims the checkpoint does
//!    not hold are removed, those of the claims it holds written ([`crate::claim_files`]),
//! 7. the hooks, which hold every device the checkpoint says is in a pod, so discovery's
//!    first pass still publishes it; discovery's first pass, the health monitor (device
//!    health for the kubelet, and the taints of unhealthy devices, see [`crate::health`])
//!    and the ResourceSlice publisher given the monitor's device list,
//! 8. the reports: claim status and pod network-status, level-triggered from the
//!    checkpoint (seeded from it now),
//! 9. the NRI plugin (pod sandbox events land in [`crate::hooks`]), connecting in the
//!    background, and the DRA driver (prepare lands in [`crate::prepare`]), which refuses
//!    claims while the NRI plugin is not registered with the runtime.
//!
//! Then one loop republishes on every device-set change until SIGTERM or SIGINT, or until
//! a newer instance asks for the node (then it stops the same way, hands over, and idles
//! until SIGTERM). On
//! shutdown the kubelet plugin stops first, then the NRI plugin, then the reports are
//! flushed (for a bounded time); the slices are left in place: a restarted daemon publishes
//! the same device names, and the kubelet removes a dead driver's slices itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::resource::v1::Device;
use kubeletplugin::{
    Deferred, DriverResources, HealthReporter, Pool, PublishStatus, PublisherConfig,
    ResourceSlicePublisher,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, Recovery};
use crate::claim_files::ClaimFiles;
use crate::cli::RunArgs;
use crate::discovery::{Discovery, Inventory};
use crate::faults::Faults;
use crate::handover;
use crate::health::HealthMonitor;
use crate::hooks::PodNetworkHooks;
use crate::level_writer::Backoff;
use crate::metrics::metrics;
use crate::netlink::NetHandle;
use crate::nri::plugin::{ConnectionState, NriConfig, NriPlugin};
use crate::podnetwork::PodNetworks;
use crate::podnetwork::agent::AgentConfig;
use crate::prepare::{NetclaimDriver, RuntimeGate};
use crate::reports::Reports;
use crate::serve::{self, Readiness};
use crate::state::PreparedClaim;

/// How long shutdown waits for pending status writes.
const FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: &RunArgs) -> Result<()> {
    args.validate()?;
    let mut config = args.discovery.discovery_config()?;
    let pod_networks = args
        .discovery
        .pod_network_provider()
        .map(|provider| (provider, PodNetworks::default()));
    config.pod_networks = pod_networks.as_ref().map(|(_, networks)| networks.clone());
    let Some(node_name) = args.discovery.node_name.clone() else {
        bail!("the node name is required: pass --node-name or set NODE_NAME");
    };
    let driver_name = args.discovery.driver_name.clone();
    resolve_host_tools(args);
    // `signal` ends the process; `shutdown` ends the node agent's work, on a signal or when
    // this instance hands over to a newer one.
    let signal = CancellationToken::new();
    let stop_signal = shutdown_on_signal(signal.clone())?;
    let shutdown = signal.child_token();

    let readiness = Readiness::default();
    let (_, http) = serve::start(args.metrics_address, readiness.clone(), shutdown.clone()).await?;
    let client = kube_client(args).await?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| args.plugins_dir.join(&driver_name));

    // Registered before it takes over the node's state: during a rolling update the
    // kubelet moves to this instance at once, and its calls wait until the node is ours.
    let driver = Arc::new(Deferred::new(PREPARE_WAITS_FOR_START));
    // Reports nothing until the health monitor starts (after discovery's first pass).
    let health = HealthReporter::new();
    let plugin = kubeletplugin::Plugin::builder(driver_name.clone(), &node_name)
        .kube_client(client.clone())
        .registrar_dir(&args.registrar_dir)
        .plugin_data_dir(args.plugins_dir.join(&driver_name))
        .rolling_update(args.pod_uid.clone())
        .health(health.clone())
        .start(driver.clone())
        .await
        .context("starting the kubelet DRA plugin")?;
    tracing::info!(socket = %plugin.dra_socket_path().display(), "DRA plugin serving");
    readiness.set_registration(plugin.registration_status());

    let active = handover::become_active(
        &state_dir,
        Duration::from_secs(args.handover_timeout_seconds),
    )
    .await?;
    let handover_requests = handover::listen(&active)?;
    let checkpoint = open_checkpoint(state_dir.clone(), args.discard_corrupt_checkpoint).await?;
    let files = claim_files(args, &checkpoint).await?;

    let discovery = Discovery::open(config).context("starting discovery")?;
    let inventory: Inventory = discovery.inventory();
    if let Some((provider, networks)) = &pod_networks {
        tracing::info!(%provider, "serving PodNetworks");
        tokio::spawn(crate::podnetwork::agent::run(
            client.clone(),
            AgentConfig {
                provider: provider.clone(),
                driver: driver_name.clone(),
            },
            networks.clone(),
            inventory.clone(),
            shutdown.clone(),
        ));
    }
    let hooks = PodNetworkHooks::new(
        checkpoint.clone(),
        NetHandle::current().context("opening netlink in the host namespace")?,
        Box::new(inventory.clone()),
    )
    .with_crash_point(args.crash_at)
    .with_faults(Faults::once(&args.inject_fault))
    .with_claim_files(files.clone())
    .with_cni(args.cni.runner_with(
        &state_dir,
        crate::nri::plugin::handler_budget(args.nri_request_timeout()),
    )?);
    hooks.hold_attached_devices();

    let watch = discovery
        .watch(shutdown.clone())
        .await
        .context("discovering this node's NICs")?;
    tracing::info!(node = %node_name, devices = watch.devices.borrow().len(), "discovery started");
    let mut published = crate::health::spawn(
        HealthMonitor::new(args.health_config(&node_name)),
        watch.devices.clone(),
        watch.links.clone(),
        health.clone(),
        shutdown.clone(),
    );
    let publisher = ResourceSlicePublisher::start(
        client.clone(),
        PublisherConfig {
            driver_name: driver_name.clone(),
            node_name: node_name.clone(),
            node_uid: None,
        },
    );
    readiness.set_slices(publisher.status());
    let slice_metrics = tokio::spawn(count_slice_passes(publisher.status()));
    publish(
        &publisher,
        &node_name,
        published.borrow_and_update().clone(),
    );
    let reports = Reports::start(
        client.clone(),
        checkpoint.clone(),
        &driver_name,
        &node_name,
        Backoff::default(),
        shutdown.clone(),
    );

    let parts = NodeAgent::start(
        args,
        client,
        &inventory,
        Prepared {
            checkpoint,
            files,
            pod_networks: pod_networks.map(|(_, networks)| networks),
        },
        hooks,
        &shutdown,
        &readiness,
    )?;
    driver.set(parts.driver);
    let agent = NodeAgent {
        plugin,
        nri: parts.nri,
        hooks: parts.hooks,
    };

    let mut handover = None;
    let outcome = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            request = handover::requested(&handover_requests) => {
                tracing::info!("a newer netclaim on this node asks to take over: stepping down");
                handover = Some(request);
                break Ok(());
            }
            changed = published.changed() => {
                if changed.is_err() {
                    break Err(anyhow::anyhow!("discovery stopped"));
                }
                let devices = published.borrow_and_update().clone();
                tracing::info!(devices = devices.len(), "publishing the changed device set");
                publish(&publisher, &node_name, devices);
            }
        }
    };

    shutdown.cancel();
    match watch.task.await {
        Ok(Err(err)) => tracing::warn!("discovery ended with: {err:#}"),
        Err(err) => tracing::warn!("discovery task failed: {err}"),
        Ok(Ok(())) => {}
    }
    agent.stop().await;
    if !reports.flush(FLUSH_ON_SHUTDOWN).await {
        tracing::warn!(
            backlog = reports.backlog(),
            "stopping with status writes pending; the next start writes them from the checkpoint"
        );
    }
    reports.stop();
    publisher.shutdown(false).await;
    slice_metrics.abort();
    if let Some(request) = handover {
        // Everything is on disk and nothing acts on the node any more: let the new one in.
        request.complete(active).await;
        tracing::info!("handed over to the newer netclaim; idle until SIGTERM");
        signal.cancelled().await;
    }
    stop_signal.abort();
    signal.cancel();
    if let Err(err) = http.await {
        tracing::warn!("the metrics endpoint task failed: {err}");
    }
    tracing::info!("stopped");
    outcome
}

/// How long a kubelet call waits for the daemon to take over its node (below the kubelet's
/// own limit on a DRA call, so the answer is ours: "still starting", retried).
const PREPARE_WAITS_FOR_START: Duration = Duration::from_secs(30);

/// Hands the device list to the publisher and counts it.
fn publish(publisher: &ResourceSlicePublisher, node_name: &str, devices: Vec<Arc<Device>>) {
    metrics()
        .published_devices
        .set(i64::try_from(devices.len()).unwrap_or(i64::MAX));
    publisher.update(driver_resources(node_name, devices));
}

/// Counts the publisher's passes: the ones that brought the slices in line, and failures.
async fn count_slice_passes(mut status: watch::Receiver<PublishStatus>) {
    let mut seen = status.borrow_and_update().clone();
    let mut trimmed = false;
    while status.changed().await.is_ok() {
        let now = status.borrow_and_update().clone();
        if now.synced_generation > seen.synced_generation {
            metrics().slice_syncs.inc();
            // Once, after the first slices are written: the start-up peak's free memory
            // back to the kernel (see crate::memory).
            if !std::mem::replace(&mut trimmed, true) {
                tokio::task::spawn_blocking(|| {
                    if let Some(held) = crate::memory::trim_once() {
                        tracing::info!(
                            malloc_locks_held_ms = held.as_secs_f64() * 1000.0,
                            "returned the start-up peak's free memory to the kernel"
                        );
                    }
                });
            }
        }
        if now.last_error.is_some() && now.last_error != seen.last_error {
            metrics().slice_errors.inc();
        }
        seen = now;
    }
}

/// The publisher's input: one pool named after the node. The devices stay shared with
/// discovery's inventory and the health monitor (only tainted ones are the monitor's own).
pub fn driver_resources(node_name: &str, devices: Vec<Arc<Device>>) -> DriverResources {
    DriverResources {
        pools: [(node_name.to_owned(), Pool { devices })]
            .into_iter()
            .collect(),
    }
}

/// Resolves `nsenter` and `ethtool` once, from the flags or the standard directories, and
/// logs where each is (or why it is missing).
fn resolve_host_tools(args: &RunArgs) {
    let tools =
        crate::exec::HostTools::resolve(args.nsenter_path.as_deref(), args.ethtool_path.as_deref());
    for (name, found) in [("nsenter", &tools.nsenter), ("ethtool", &tools.ethtool)] {
        match found {
            Ok(path) => tracing::info!(tool = name, path = %path.display(), "host tool"),
            Err(why) => tracing::warn!(
                tool = name,
                "{why}; claims with interface.ethtoolFeatures will fail"
            ),
        }
    }
    if crate::exec::set_host_tools(tools).is_err() {
        tracing::warn!("host tools were resolved before the flags were read; the first stays");
    }
}

/// Opens the checkpoint on a blocking thread.
async fn open_checkpoint(
    state_dir: std::path::PathBuf,
    discard_corrupt: bool,
) -> Result<Arc<Checkpoint>> {
    let recovery = if discard_corrupt {
        Recovery::StartEmpty
    } else {
        Recovery::Fail
    };
    let display = state_dir.display().to_string();
    let checkpoint = tokio::task::spawn_blocking(move || Checkpoint::open(state_dir, recovery))
        .await
        .context("opening the checkpoint")?
        .with_context(|| format!("opening the checkpoint in {display}"))?;
    Ok(Arc::new(checkpoint))
}

/// The claims' CDI spec and metadata files (`--cdi-spec-dir`, `--device-metadata`), in
/// line with the checkpoint: files of claims it does not hold are removed, those of the
/// claims it holds written.
async fn claim_files(args: &RunArgs, checkpoint: &Checkpoint) -> Result<ClaimFiles> {
    let driver_name = &args.discovery.driver_name;
    let metadata_dir = args.plugins_dir.join(driver_name);
    let files = ClaimFiles::new(
        &args.cdi_spec_dir,
        driver_name,
        args.device_metadata.then_some(metadata_dir.as_path()),
        &args.discovery.sysfs_root,
    )
    .context("--driver-name cannot name CDI devices")?;
    let claims = checkpoint
        .index()
        .claims()
        .map(|claim| PreparedClaim::clone(claim))
        .collect();
    let done = files.reconcile(claims).await.map_err(|e| {
        anyhow::anyhow!(
            "writing CDI specs to --cdi-spec-dir {}: {e}",
            args.cdi_spec_dir.display()
        )
    })?;
    if !done.removed.is_empty() {
        tracing::info!(claims = ?done.removed, "removed the CDI files of claims the checkpoint does not hold");
    }
    tracing::info!(
        dir = %args.cdi_spec_dir.display(),
        claims = done.written,
        device_metadata = args.device_metadata,
        "CDI specs in place"
    );
    Ok(files)
}

/// `netclaim controller`: the PodNetwork condition writer, until SIGTERM or SIGINT.
pub async fn run_controller(args: &crate::cli::ControllerArgs) -> Result<()> {
    let shutdown = CancellationToken::new();
    let stop_signal = shutdown_on_signal(shutdown.clone())?;
    let client = client_from(args.kubeconfig.as_deref()).await?;
    let config = crate::podnetwork::controller::ControllerConfig {
        provider: args
            .pod_network_provider
            .clone()
            .unwrap_or_else(|| args.driver_name.clone()),
        driver: args.driver_name.clone(),
    };
    tracing::info!(provider = %config.provider, "PodNetwork controller started");
    crate::podnetwork::controller::run(client, config, shutdown).await;
    stop_signal.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The client from `--kubeconfig` / `KUBECONFIG`, or the in-cluster service account.
async fn kube_client(args: &RunArgs) -> Result<kube::Client> {
    client_from(args.kubeconfig.as_deref()).await
}

async fn client_from(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster()
            .context("no --kubeconfig or KUBECONFIG given, and not running in a cluster")?,
    };
    kube::Client::try_from(config).context("creating the Kubernetes client")
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
fn shutdown_on_signal(shutdown: CancellationToken) -> Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    }))
}

/// Where prepared claims are kept: the checkpoint and the files on the node.
struct Prepared {
    checkpoint: Arc<Checkpoint>,
    files: ClaimFiles,
    /// The PodNetworks served, when they are.
    pod_networks: Option<PodNetworks>,
}

/// The parts that act on claims: the DRA kubelet plugin and the NRI plugin, sharing the
/// checkpoint and the hooks.
struct NodeAgent {
    plugin: kubeletplugin::PluginHandle,
    nri: tokio::task::JoinHandle<()>,
    hooks: PodNetworkHooks,
}

/// The DRA driver the daemon runs.
type ClaimDriver = NetclaimDriver<Inventory, PodNetworkHooks, kube::Client>;

impl NodeAgent {
    /// Starts the NRI plugin and builds the DRA driver (the kubelet plugin was started
    /// before, with a [`Deferred`] driver; the caller fills in `plugin`).
    fn start(
        args: &RunArgs,
        client: kube::Client,
        inventory: &Inventory,
        prepared: Prepared,
        hooks: PodNetworkHooks,
        shutdown: &CancellationToken,
        readiness: &Readiness,
    ) -> Result<AgentParts> {
        let Prepared {
            checkpoint,
            files,
            pod_networks,
        } = prepared;
        let driver_name = &args.discovery.driver_name;
        let nri = NriPlugin::new(
            NriConfig {
                socket_path: args.nri_socket.clone(),
                plugin_idx: args.nri_plugin_index.clone(),
                request_timeout: args.nri_request_timeout(),
                ..NriConfig::default()
            },
            Arc::new(hooks.clone()),
        )
        .context("configuring the NRI plugin")?;
        readiness.set_nri(nri.connection_state());
        let gate = RuntimeGate::nri(nri.connection_state(), &args.nri_socket);
        let nri = tokio::spawn(run_nri(nri, shutdown.clone()));
        let mut driver = NetclaimDriver::new(checkpoint, inventory.clone(), hooks.clone())
            .with_driver_name(driver_name.clone())
            .with_runtime_gate(gate)
            .with_claim_files(files)
            .with_allowed_plugins(args.cni.allowed_plugins()?);
        if let Some(networks) = pod_networks {
            driver = driver.with_pod_networks(networks);
        }
        let driver = Arc::new(driver.with_network_attachments(client));
        Ok(AgentParts { nri, hooks, driver })
    }

    async fn stop(self) {
        if let Err(err) = self.plugin.shutdown().await {
            tracing::warn!("stopping the DRA plugin: {err}");
        }
        if let Err(err) = self.nri.await {
            tracing::warn!("the NRI task failed: {err}");
        }
        self.hooks.reconciled().await;
    }
}

/// A [`NodeAgent`] before its kubelet plugin is attached.
struct AgentParts {
    nri: tokio::task::JoinHandle<()>,
    hooks: PodNetworkHooks,
    driver: Arc<ClaimDriver>,
}

/// Serves the runtime until shutdown, logging each (re)registration.
async fn run_nri(nri: NriPlugin<PodNetworkHooks>, shutdown: CancellationToken) {
    let mut state = nri.connection_state();
    let log_state = async move {
        while state.changed().await.is_ok() {
            match *state.borrow_and_update() {
                ConnectionState::Connected { session } => {
                    tracing::info!(session, "NRI plugin registered with the runtime");
                }
                ConnectionState::Disconnected => tracing::warn!(
                    "NRI runtime disconnected: prepare refuses claims until it is back"
                ),
            }
        }
    };
    tokio::select! {
        result = nri.run(shutdown) => {
            if let Err(err) = result {
                tracing::error!("NRI plugin stopped: {err}");
            }
        }
        () = log_state => {}
    }
}
