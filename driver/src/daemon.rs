//! `netclaim run`: the node daemon's lifecycle.
//!
//! Start-up order, each step failing the start with a message naming what was wrong:
//! 1. configuration (an invalid `--filter`, a `--cni-timeout-seconds` that cannot fit in an
//!    NRI hook, an empty `--cni-allowed-plugins` stop here) and the host tools
//!    (`nsenter`, `ethtool`) resolved to absolute paths once ([`crate::exec`]; a missing
//!    one is logged and fails only the claims that need it),
//! 2. the Kubernetes client,
//! 3. the checkpoint of prepared claims (a corrupt record stops the start unless
//!    `--discard-corrupt-checkpoint`), read on a blocking thread,
//! 4. the claims' CDI specs and device metadata files: those of claims the checkpoint does
//!    not hold are removed, those of the claims it holds written ([`crate::claim_files`]),
//! 5. the hooks, which hold every device the checkpoint says is in a pod, so discovery's
//!    first pass still publishes it,
//! 6. discovery's first pass, and the ResourceSlice publisher given its device list,
//! 7. the reports: claim status and pod network-status, level-triggered from the
//!    checkpoint (seeded from it now),
//! 8. the NRI plugin (pod sandbox events land in [`crate::hooks`]), connecting in the
//!    background, and the DRA kubelet plugin (prepare lands in [`crate::prepare`]), which
//!    refuses claims while the NRI plugin is not registered with the runtime.
//!
//! Then one loop republishes on every device-set change until SIGTERM or SIGINT. On
//! shutdown the kubelet plugin stops first, then the NRI plugin, then the reports are
//! flushed (for a bounded time); the slices are left in place: a restarted daemon publishes
//! the same device names, and the kubelet removes a dead driver's slices itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::resource::v1::Device;
use kubeletplugin::{DriverResources, Pool, PublisherConfig, ResourceSlicePublisher};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, Recovery};
use crate::claim_files::ClaimFiles;
use crate::cli::RunArgs;
use crate::discovery::{Discovery, Inventory};
use crate::faults::Faults;
use crate::hooks::PodNetworkHooks;
use crate::level_writer::Backoff;
use crate::netlink::NetHandle;
use crate::nri::plugin::{ConnectionState, NriConfig, NriPlugin};
use crate::prepare::{NetclaimDriver, RuntimeGate};
use crate::reports::Reports;
use crate::state::PreparedClaim;

/// How long shutdown waits for pending status writes.
const FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: &RunArgs) -> Result<()> {
    args.validate()?;
    let config = args.discovery.discovery_config()?;
    let Some(node_name) = args.discovery.node_name.clone() else {
        bail!("the node name is required: pass --node-name or set NODE_NAME");
    };
    let driver_name = args.discovery.driver_name.clone();
    resolve_host_tools(args);
    let shutdown = CancellationToken::new();
    let stop_signal = shutdown_on_signal(shutdown.clone())?;

    let client = kube_client(args).await?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| args.plugins_dir.join(&driver_name));
    let checkpoint = open_checkpoint(state_dir.clone(), args.discard_corrupt_checkpoint).await?;
    let files = claim_files(args, &checkpoint).await?;

    let discovery = Discovery::open(config).context("starting discovery")?;
    let inventory: Inventory = discovery.inventory();
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

    let mut watch = discovery
        .watch(shutdown.clone())
        .await
        .context("discovering this node's NICs")?;
    tracing::info!(node = %node_name, devices = watch.devices.borrow().len(), "discovery started");
    let publisher = ResourceSlicePublisher::start(
        client.clone(),
        PublisherConfig {
            driver_name: driver_name.clone(),
            node_name: node_name.clone(),
            node_uid: None,
        },
    );
    publisher.update(driver_resources(
        &node_name,
        watch.devices.borrow_and_update().clone(),
    ));
    let reports = Reports::start(
        client.clone(),
        checkpoint.clone(),
        &driver_name,
        &node_name,
        Backoff::default(),
        shutdown.clone(),
    );

    let agent = NodeAgent::start(
        args,
        client,
        &node_name,
        &inventory,
        Prepared { checkpoint, files },
        hooks,
        &shutdown,
    )
    .await?;

    let outcome = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            changed = watch.devices.changed() => {
                if changed.is_err() {
                    break Err(anyhow::anyhow!("discovery stopped"));
                }
                let devices = watch.devices.borrow_and_update().clone();
                tracing::info!(devices = devices.len(), "publishing the changed device set");
                publisher.update(driver_resources(&node_name, devices));
            }
        }
    };

    shutdown.cancel();
    stop_signal.abort();
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
    tracing::info!("stopped");
    outcome
}

/// The publisher's input: one pool named after the node.
pub fn driver_resources(node_name: &str, devices: Vec<Device>) -> DriverResources {
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

/// The client from `--kubeconfig` / `KUBECONFIG`, or the in-cluster service account.
async fn kube_client(args: &RunArgs) -> Result<kube::Client> {
    let config = match &args.kubeconfig {
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
}

/// The parts that act on claims: the DRA kubelet plugin and the NRI plugin, sharing the
/// checkpoint and the hooks.
struct NodeAgent {
    plugin: kubeletplugin::PluginHandle,
    nri: tokio::task::JoinHandle<()>,
    hooks: PodNetworkHooks,
}

impl NodeAgent {
    async fn start(
        args: &RunArgs,
        client: kube::Client,
        node_name: &str,
        inventory: &Inventory,
        prepared: Prepared,
        hooks: PodNetworkHooks,
        shutdown: &CancellationToken,
    ) -> Result<Self> {
        let Prepared { checkpoint, files } = prepared;
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
        let gate = RuntimeGate::nri(nri.connection_state(), &args.nri_socket);
        let nri = tokio::spawn(run_nri(nri, shutdown.clone()));
        let driver = Arc::new(
            NetclaimDriver::new(checkpoint, inventory.clone(), hooks.clone())
                .with_driver_name(driver_name.clone())
                .with_runtime_gate(gate)
                .with_claim_files(files)
                .with_allowed_plugins(args.cni.allowed_plugins()?)
                .with_network_attachments(client.clone()),
        );
        let plugin = kubeletplugin::Plugin::builder(driver_name.clone(), node_name)
            .kube_client(client)
            .registrar_dir(&args.registrar_dir)
            .plugin_data_dir(args.plugins_dir.join(driver_name))
            .start(driver)
            .await
            .context("starting the kubelet DRA plugin")?;
        tracing::info!(socket = %plugin.dra_socket_path().display(), "DRA plugin serving");
        Ok(Self { plugin, nri, hooks })
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
