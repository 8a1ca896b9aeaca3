//! `netclaim run`: the node daemon's lifecycle.
//!
//! Start-up order, each step failing the start with a message naming what was wrong:
//! 1. configuration (an invalid `--filter` stops here),
//! 2. the Kubernetes client,
//! 3. discovery's first pass,
//! 4. the ResourceSlice publisher, given the first device list,
//! 5. the checkpoint of prepared claims (a corrupt one stops the start unless
//!    `--discard-corrupt-checkpoint`),
//! 6. the DRA kubelet plugin (registration + `DRAPlugin` sockets; prepare lands in
//!    [`crate::prepare`]),
//! 7. the NRI plugin (pod sandbox events land in [`crate::hooks`]), which keeps
//!    reconnecting to the runtime in the background.
//!
//! Then one loop republishes on every device-set change until SIGTERM or SIGINT. On
//! shutdown the slices are left in place: a restarted daemon publishes the same device
//! names, and the kubelet removes a dead driver's slices itself.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::resource::v1::Device;
use kubeletplugin::{DriverResources, Pool, PublisherConfig, ResourceSlicePublisher};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::checkpoint::{Checkpoint, Recovery};
use crate::cli::RunArgs;
use crate::discovery::{Discovery, Inventory};
use crate::hooks::PodNetworkHooks;
use crate::netlink::NetHandle;
use crate::network_status::NetworkStatusWriter;
use crate::nri::plugin::{ConnectionState, NriConfig, NriPlugin};
use crate::prepare::{NetclaimDriver, PreparedClaims};
use crate::status::{Backoff, ClaimStatusWriter};

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: &RunArgs) -> Result<()> {
    let config = args.discovery.discovery_config()?;
    let Some(node_name) = args.discovery.node_name.clone() else {
        bail!("the node name is required: pass --node-name or set NODE_NAME");
    };
    let driver_name = args.discovery.driver_name.clone();
    let shutdown = CancellationToken::new();
    let stop_signal = shutdown_on_signal(shutdown.clone())?;

    let client = kube_client(args).await?;
    let discovery = Discovery::open(config).context("starting discovery")?;
    let inventory: Inventory = discovery.inventory();
    let mut watch = discovery
        .watch(shutdown.clone())
        .await
        .context("discovering this node's NICs")?;
    tracing::info!(node = %node_name, devices = watch.devices.borrow().len(), "discovery started");

    let publisher = ResourceSlicePublisher::start(
        client.clone(),
        PublisherConfig {
            driver_name,
            node_name: node_name.clone(),
            node_uid: None,
        },
    );
    publisher.update(driver_resources(
        &node_name,
        watch.devices.borrow_and_update().clone(),
    ));

    let agent = NodeAgent::start(args, client.clone(), &node_name, &inventory, &shutdown).await?;

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

/// The parts that act on claims: the DRA kubelet plugin and the NRI plugin, sharing the
/// checkpoint and the hooks.
struct NodeAgent {
    plugin: kubeletplugin::PluginHandle,
    nri: tokio::task::JoinHandle<()>,
}

impl NodeAgent {
    async fn start(
        args: &RunArgs,
        client: kube::Client,
        node_name: &str,
        inventory: &Inventory,
        shutdown: &CancellationToken,
    ) -> Result<Self> {
        let driver_name = &args.discovery.driver_name;
        let plugin_dir = args.plugins_dir.join(driver_name);
        let state_dir = args.state_dir.clone().unwrap_or_else(|| plugin_dir.clone());
        let recovery = if args.discard_corrupt_checkpoint {
            Recovery::StartEmpty
        } else {
            Recovery::Fail
        };
        let checkpoint = Arc::new(
            Checkpoint::open(&state_dir, recovery)
                .with_context(|| format!("opening the checkpoint in {}", state_dir.display()))?,
        );
        let host = NetHandle::current().context("opening netlink in the host namespace")?;
        let status = ClaimStatusWriter::start(client.clone(), Backoff::default());
        let hooks = Arc::new(
            PodNetworkHooks::new(
                PreparedClaims::new(checkpoint.clone()),
                host,
                Some(status),
                Box::new(inventory.clone()),
            )
            .with_crash_point(args.crash_at)
            .with_network_status(NetworkStatusWriter::start(
                client.clone(),
                Backoff::default(),
            ))
            .with_cni(args.cni.runner(&state_dir)),
        );
        let driver = Arc::new(
            NetclaimDriver::new(checkpoint, inventory.clone(), hooks.clone())
                .with_network_attachments(client.clone()),
        );
        let plugin = kubeletplugin::Plugin::builder(driver_name.clone(), node_name)
            .kube_client(client)
            .registrar_dir(&args.registrar_dir)
            .plugin_data_dir(&plugin_dir)
            .start(driver)
            .await
            .context("starting the kubelet DRA plugin")?;
        tracing::info!(socket = %plugin.dra_socket_path().display(), "DRA plugin serving");
        let nri = NriPlugin::new(
            NriConfig {
                socket_path: args.nri_socket.clone(),
                plugin_idx: args.nri_plugin_index.clone(),
                ..NriConfig::default()
            },
            hooks,
        )
        .context("configuring the NRI plugin")?;
        let nri = tokio::spawn(run_nri(nri, shutdown.clone()));
        Ok(Self { plugin, nri })
    }

    async fn stop(self) {
        if let Err(err) = self.plugin.shutdown().await {
            tracing::warn!("stopping the DRA plugin: {err}");
        }
        if let Err(err) = self.nri.await {
            tracing::warn!("the NRI task failed: {err}");
        }
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
                ConnectionState::Disconnected => tracing::warn!("NRI runtime disconnected"),
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
