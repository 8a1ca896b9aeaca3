//! The `netclaim` command line: flags (with environment-variable fallbacks) and the
//! `devices` command. `run` lives in [`crate::daemon`].

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::resource::v1::Device;

use crate::discovery::{
    self, DeviceFilter, DeviceLink, Discovery, DiscoveryConfig, Report, SharedNics,
};
use crate::health::{HealthConfig, TaintEffect};

/// Default of `--shared-children`: CNI children per shared parent NIC.
pub const DEFAULT_SHARED_CHILDREN: u32 = 16;
/// Largest `--shared-children`: beyond this many macvlans a NIC's unicast filter overflows
/// into promiscuous mode and the count stops meaning anything for scheduling.
pub const MAX_SHARED_CHILDREN: u32 = 1024;

const ABOUT: &str = "netclaim: a Kubernetes DRA network driver. It publishes this node's NICs \
as resource.k8s.io/v1 ResourceSlices and moves claimed NICs into pods through containerd NRI.";

const EXAMPLES: &str = "\
Examples:
  # What would this node publish? (a table; -o yaml|json prints the ResourceSlices)
  netclaim devices
  netclaim devices -o yaml --filter 'device.attributes[\"netclaim.dev\"].type == \"device\"'

  # Run the node daemon (normally from the DaemonSet, NODE_NAME from the downward API)
  NODE_NAME=node-1 netclaim run --multus-resource-name intel.com/sriov_netdevice

  # Are these claims, classes and NADs what prepare will accept?
  netclaim validate examples/install/deviceclass.yaml examples/claims/*.yaml

  # Which devices would this claim get here, and if none, why not?
  netclaim explain claim.yaml class.yaml [--devices-file slices.yaml]
  netclaim explain --claim default/my-claim --kubeconfig ~/.kube/config

  # Is every CNI-mode network on this node still as its plugins set it up?
  kubectl -n kube-system exec ds/netclaim -- netclaim check [--claim <namespace>/<name>]

  # Share the physical NICs: up to 32 macvlan/ipvlan children (CNI-mode claims) each
  netclaim run --shared-filter 'device.attributes[\"netclaim.dev\"].type == \"device\"' \\
    --shared-children 32";

/// The `netclaim` command line.
#[derive(Debug, Parser)]
#[command(name = "netclaim", version, about = ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "NETCLAIM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Run the node daemon: discovery and ResourceSlice publishing, the kubelet DRA plugin,
    /// and the NRI plugin that attaches claimed NICs to pods.
    Run(RunArgs),
    /// Print the devices this node would publish, and which interfaces are left out and why.
    Devices(DevicesArgs),
    /// Run CNI CHECK for the CNI-mode attachments on this node (read-only; exits non-zero
    /// when one fails).
    Check(CheckArgs),
    /// Check DeviceClasses, ResourceClaims, ResourceClaimTemplates and
    /// NetworkAttachmentDefinitions offline, as prepare would (exits non-zero on any
    /// problem, one line each: file, object, field path).
    Validate(crate::validate::ValidateArgs),
    /// Say which of this node's devices each request of a claim matches (and why the others
    /// do not), the config prepare would use and what attach would do.
    Explain(crate::explain::ExplainArgs),
    /// Run the PodNetwork condition writer (one replica per cluster, a Deployment): sets
    /// Accepted, Ready and Conflicted on the PodNetworks this driver provides.
    Controller(ControllerArgs),
}

/// Flags of `netclaim controller`.
#[derive(Clone, Debug, Args)]
pub struct ControllerArgs {
    /// Kubeconfig file; without one, the in-cluster service account is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The DRA driver name (the attribute domain; whose ResourceSlices are read).
    #[arg(long, env = "NETCLAIM_DRIVER_NAME", default_value = netclaim_api::DRIVER_NAME)]
    pub driver_name: String,

    /// Serve PodNetworks whose spec.provider is this (default: the driver name).
    #[arg(long, env = "NETCLAIM_POD_NETWORK_PROVIDER")]
    pub pod_network_provider: Option<String>,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output formats of `netclaim devices`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table of devices and skipped interfaces.
    Table,
    /// The ResourceSlice objects as YAML documents.
    Yaml,
    /// The ResourceSlice objects as a JSON `v1` List.
    Json,
}

/// Flags shared by `run` and `devices`: how discovery finds and describes devices.
#[derive(Clone, Debug, Args)]
pub struct DiscoveryArgs {
    /// This node's name (the pool name and spec.nodeName of the slices).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// DRA driver name to publish under.
    #[arg(long, env = "NETCLAIM_DRIVER_NAME", default_value = netclaim_api::DRIVER_NAME)]
    pub driver_name: String,

    /// CEL expression selecting which NICs to publish, evaluated like a DeviceClass selector
    /// (e.g. `device.attributes["netclaim.dev"].type == "device"`). A device on which it
    /// fails (say, a missing attribute) is left out and logged.
    #[arg(long, env = "NETCLAIM_FILTER")]
    pub filter: Option<String>,

    /// Publish the Multus interop attributes k8s.cni.cncf.io/resourceName (this value) and
    /// k8s.cni.cncf.io/deviceID (the PCI address).
    #[arg(long, env = "NETCLAIM_MULTUS_RESOURCE_NAME")]
    pub multus_resource_name: Option<String>,

    /// Where sysfs is mounted (tests point this at a fixture tree).
    #[arg(long, env = "NETCLAIM_SYSFS_ROOT", default_value = "/sys")]
    pub sysfs_root: PathBuf,

    /// CEL expression selecting which published NICs are shared parents (same `device`
    /// variable as --filter). A shared parent is published with allowMultipleAllocations and
    /// the consumable capacity netclaim.dev/children (DRA consumable capacity, Kubernetes
    /// 1.34+ with the DRAConsumableCapacity feature gate), so many claims get it at once,
    /// each for a CNI child (macvlan, ipvlan) of the NIC. Claims that would move the NIC
    /// itself into a pod are refused on it. A device on which the expression fails stays
    /// unshared.
    #[arg(long, env = "NETCLAIM_SHARED_FILTER")]
    pub shared_filter: Option<String>,

    /// Publish virtual devices too (veth, macvlan, vxlan, tunnels). Off by default: on a
    /// node those are other pods' host-side veths, overlays and tunnels, which a claim must
    /// never take. Use it only on nodes (or test setups) whose virtual devices are meant
    /// for pods, and narrow them with --filter.
    #[arg(long, env = "NETCLAIM_INCLUDE_VIRTUAL")]
    pub include_virtual: bool,

    /// How many CNI children each shared parent NIC may have at once (its
    /// netclaim.dev/children capacity); the driver refuses the claim beyond it too.
    #[arg(
        long,
        env = "NETCLAIM_SHARED_CHILDREN",
        default_value_t = DEFAULT_SHARED_CHILDREN,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SHARED_CHILDREN))
    )]
    pub shared_children: u32,

    /// The effect of the netclaim.dev/unhealthy taint on a published NIC whose link is
    /// lost (administratively up without carrier, or operationally down) or which left the
    /// node: `NoSchedule` (the scheduler allocates it only to claims that tolerate the
    /// taint), `NoExecute` (also evicts pods whose claims hold it), `None` (shown, no
    /// effect; Kubernetes 1.35+), or `off` (no taint; health still reaches the kubelet).
    /// API servers with the DRADeviceTaints feature gate off (1.34 and 1.35 by default)
    /// drop taints.
    #[arg(
        long,
        env = "NETCLAIM_UNHEALTHY_TAINT_EFFECT",
        value_enum,
        default_value_t = TaintEffect::NoSchedule
    )]
    pub unhealthy_taint_effect: TaintEffect,

    /// Serve the PodNetworks (multinetwork.networking.k8s.io) whose spec.provider is this
    /// (default: the driver name): a device exactly one Ready PodNetwork selects gets the
    /// attribute `<driver name>/podNetwork`. An empty value turns PodNetworks off.
    #[arg(long, env = "NETCLAIM_POD_NETWORK_PROVIDER")]
    pub pod_network_provider: Option<String>,
}

impl DiscoveryArgs {
    /// The PodNetwork provider name served, `None` when PodNetworks are off.
    pub fn pod_network_provider(&self) -> Option<String> {
        match &self.pod_network_provider {
            None => Some(self.driver_name.clone()),
            Some(provider) if provider.trim().is_empty() => None,
            Some(provider) => Some(provider.clone()),
        }
    }

    /// The discovery configuration; fails on an invalid filter.
    pub fn discovery_config(&self) -> Result<DiscoveryConfig> {
        let filter = match self.filter.as_deref().filter(|f| !f.trim().is_empty()) {
            Some(source) => Some(Arc::new(DeviceFilter::new(source)?)),
            None => None,
        };
        let shared = match self
            .shared_filter
            .as_deref()
            .filter(|f| !f.trim().is_empty())
        {
            Some(source) => Some(SharedNics {
                filter: Arc::new(DeviceFilter::for_flag("--shared-filter", source)?),
                children: self.shared_children,
            }),
            None => None,
        };
        Ok(DiscoveryConfig {
            driver_name: self.driver_name.clone(),
            sysfs_root: self.sysfs_root.clone(),
            filter,
            multus_resource_name: self.multus_resource_name.clone(),
            shared,
            include_virtual: self.include_virtual,
            ..DiscoveryConfig::default()
        })
    }

    /// The node name, or the host name when none was given.
    pub fn node_name_or_hostname(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_owned())
        })
    }
}

/// Flags of `netclaim run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Discovery flags.
    #[command(flatten)]
    pub discovery: DiscoveryArgs,

    /// Kubeconfig file; without one, the in-cluster service account is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubelet's plugin registration directory.
    #[arg(
        long,
        env = "NETCLAIM_REGISTRAR_DIR",
        default_value = "/var/lib/kubelet/plugins_registry"
    )]
    pub registrar_dir: PathBuf,

    /// The kubelet's plugins directory (the driver's socket goes in `<dir>/<driver name>/`).
    #[arg(
        long,
        env = "NETCLAIM_PLUGINS_DIR",
        default_value = "/var/lib/kubelet/plugins"
    )]
    pub plugins_dir: PathBuf,

    /// containerd's NRI socket.
    #[arg(
        long,
        env = "NETCLAIM_NRI_SOCKET",
        default_value = "/var/run/nri/nri.sock"
    )]
    pub nri_socket: PathBuf,

    /// The NRI plugin index (two digits): plugins run in ascending order.
    #[arg(long, env = "NETCLAIM_NRI_PLUGIN_INDEX", default_value = "10")]
    pub nri_plugin_index: String,

    /// How long the container runtime waits for an NRI hook: containerd's
    /// `plugin_request_timeout` (default 2 s). The runtime's own value, when it sends one
    /// at registration, wins. Every hook answers within it; CNI plugins get what is left
    /// of it.
    #[arg(
        long,
        env = "NETCLAIM_NRI_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u64).range(1..=600)
    )]
    pub nri_request_timeout_seconds: u64,

    /// Where the checkpoint of prepared claims lives (default: the plugin's directory
    /// under --plugins-dir).
    #[arg(long, env = "NETCLAIM_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// The CDI spec directory netclaim writes each prepared claim's spec to (RDMA
    /// character devices of moved NICs, the device metadata mount). The container runtime
    /// must read it: containerd 1.7 needs `enable_cdi = true` (its `cdi_spec_dirs` default,
    /// like 2.x's, includes /var/run/cdi).
    #[arg(long, env = "NETCLAIM_CDI_SPEC_DIR", default_value = crate::cdi::DEFAULT_SPEC_DIR)]
    pub cdi_spec_dir: PathBuf,

    /// Give containers the claim's device metadata (KEP-5304): a read-only file under
    /// /var/run/kubernetes.io/dra-device-attributes/ with the devices' attributes and, once
    /// attached, their network data (interface name, addresses, MAC).
    #[arg(
        long,
        env = "NETCLAIM_DEVICE_METADATA",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub device_metadata: bool,

    /// Start with an empty state when the checkpoint is corrupt (it is kept aside as
    /// `checkpoint.json.corrupt-<time>`). Without this flag a corrupt checkpoint stops the
    /// daemon: forgetting prepared claims could strand NICs in pods.
    #[arg(long, env = "NETCLAIM_DISCARD_CORRUPT_CHECKPOINT")]
    pub discard_corrupt_checkpoint: bool,

    /// The absolute path of `nsenter` (util-linux), used to run ethtool inside a pod's
    /// network namespace. Default: the first found in /usr/sbin, /sbin, /usr/bin, /bin.
    #[arg(long, env = "NETCLAIM_NSENTER_PATH")]
    pub nsenter_path: Option<PathBuf>,

    /// The absolute path of `ethtool`, for claims with interface.ethtoolFeatures.
    /// Default: the first found in /usr/sbin, /sbin, /usr/bin, /bin.
    #[arg(long, env = "NETCLAIM_ETHTOOL_PATH")]
    pub ethtool_path: Option<PathBuf>,

    /// Where `/metrics` (Prometheus), `/healthz` and `/readyz` are served. The default is
    /// the node's loopback: the pod shares the node's network namespace, so another
    /// address exposes the endpoint on the node's interfaces (docs/metrics.md).
    #[arg(long, env = "NETCLAIM_METRICS_ADDRESS", default_value = crate::serve::DEFAULT_ADDRESS)]
    pub metrics_address: std::net::SocketAddr,

    /// The UID of this daemon's pod (the DaemonSet sets it from the downward API). With
    /// it the kubelet plugin's sockets carry the UID, so the old and the new pod of a
    /// rolling update (`maxSurge: 1`) are registered side by side.
    #[arg(long, env = "POD_UID")]
    pub pod_uid: Option<String>,

    /// How long a starting daemon waits for the running one on this node to hand over
    /// (a rolling update), in seconds; past it the start fails and is retried.
    #[arg(long, env = "NETCLAIM_HANDOVER_TIMEOUT_SECONDS", default_value_t = 60)]
    pub handover_timeout_seconds: u64,

    /// Test hook: abort the process at this point of an attach (crash-recovery tests).
    #[arg(long, hide = true, value_enum)]
    pub crash_at: Option<crate::hooks::CrashPoint>,

    /// Test hook: inject this failure once (fault-injection tests; repeatable).
    #[arg(long, hide = true, value_enum)]
    pub inject_fault: Vec<crate::faults::Fault>,

    /// The least time, in seconds, between two changes of one NIC's netclaim.dev/unhealthy
    /// taint: a flapping link writes its ResourceSlice at most once per interval (the
    /// kubelet's health stream still hears every change at once).
    #[arg(
        long,
        env = "NETCLAIM_TAINT_MIN_INTERVAL_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub taint_min_interval_seconds: u64,

    /// How CNI plugins run, for CNI-mode claims.
    #[command(flatten)]
    pub cni: CniArgs,
}

/// Where CNI plugins are found and how long each may run (`run` and `check`).
#[derive(Clone, Debug, Args)]
pub struct CniArgs {
    /// A directory CNI plugins are looked up in, for CNI-mode claims (repeatable, searched
    /// in order; the environment variable takes a comma-separated list).
    #[arg(
        long = "cni-bin-dir",
        env = "NETCLAIM_CNI_BIN_DIRS",
        value_delimiter = ',',
        default_values = ["/usr/lib/cni", "/opt/cni/bin"]
    )]
    pub cni_bin_dirs: Vec<PathBuf>,

    /// The CNI plugin types netclaim may run (repeatable; the environment variable takes a
    /// comma-separated list), for every network, the DeviceClasses' as well as what claims
    /// bring, IPAM types included. Checked at prepare (the claim fails naming the plugin)
    /// and again before each run. The default is what stays inside the pod and the
    /// allocated device whoever writes the config; docs/security.md says why each is in
    /// and the others (bridge, portmap, tuning, bandwidth, vlan, dhcp, sriov, ...) are not.
    #[arg(
        long = "cni-allowed-plugins",
        env = "NETCLAIM_CNI_ALLOWED_PLUGINS",
        value_delimiter = ',',
        default_values = netclaim_api::policy::DEFAULT_ALLOWED_PLUGINS,
        value_parser = parse_plugin_type
    )]
    pub cni_allowed_plugins: Vec<String>,

    /// The limit on each CNI plugin run, in seconds. In the NRI hooks a plugin never
    /// gets more than what is left of the hook's time (see --nri-request-timeout-seconds),
    /// so a value that cannot fit there is refused at start. Default: 60 for `check`, and
    /// for `run` the hook's time.
    #[arg(long, env = "NETCLAIM_CNI_TIMEOUT_SECONDS")]
    pub cni_timeout_seconds: Option<u64>,
}

/// The default per-plugin limit outside the hooks (`netclaim check`).
pub const DEFAULT_CNI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One `--cni-allowed-plugins` entry: a bare plugin file name.
fn parse_plugin_type(value: &str) -> Result<String, String> {
    let value = value.trim();
    netclaim_api::cni::check_plugin_type(value)?;
    Ok(value.to_owned())
}

impl CniArgs {
    /// The plugin allowlist these flags give.
    ///
    /// # Errors
    /// An empty list.
    pub fn allowed_plugins(&self) -> Result<netclaim_api::PluginAllowlist> {
        netclaim_api::PluginAllowlist::new(&self.cni_allowed_plugins)
            .map_err(|why| anyhow::anyhow!("--cni-allowed-plugins: {why}"))
    }

    /// A runner with these settings and its result cache in `state_dir/cni-cache` (where
    /// `netclaim run` keeps it); `default_timeout` when no timeout was given.
    ///
    /// # Errors
    /// As [`CniArgs::allowed_plugins`].
    pub fn runner_with(
        &self,
        state_dir: &std::path::Path,
        default_timeout: std::time::Duration,
    ) -> Result<crate::cni::CniRunner> {
        Ok(crate::cni::CniRunner::new(
            self.cni_bin_dirs.clone(),
            self.cni_timeout_seconds
                .map_or(default_timeout, std::time::Duration::from_secs),
            state_dir.join("cni-cache"),
        )
        .with_allowed_plugins(self.allowed_plugins()?))
    }

    /// [`CniArgs::runner_with`] the default of 60 s.
    ///
    /// # Errors
    /// As [`CniArgs::allowed_plugins`].
    pub fn runner(&self, state_dir: &std::path::Path) -> Result<crate::cni::CniRunner> {
        self.runner_with(state_dir, DEFAULT_CNI_TIMEOUT)
    }
}

impl RunArgs {
    /// How device health is derived, for the pool `node_name`.
    pub fn health_config(&self, node_name: &str) -> HealthConfig {
        HealthConfig {
            taint_effect: self.discovery.unhealthy_taint_effect,
            min_taint_interval: std::time::Duration::from_secs(self.taint_min_interval_seconds),
            ..HealthConfig::new(node_name)
        }
    }

    /// The runtime's request timeout netclaim plans for.
    pub fn nri_request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.nri_request_timeout_seconds)
    }

    /// Checks flags that only make sense together.
    ///
    /// # Errors
    /// A `--cni-timeout-seconds` that cannot fit in an NRI hook; an empty
    /// `--cni-allowed-plugins`.
    pub fn validate(&self) -> Result<()> {
        self.cni.allowed_plugins()?;
        let budget = crate::nri::plugin::handler_budget(self.nri_request_timeout());
        if let Some(seconds) = self.cni.cni_timeout_seconds
            && std::time::Duration::from_secs(seconds) >= budget
        {
            anyhow::bail!(
                "--cni-timeout-seconds {seconds} cannot fit in an NRI hook: the container \
                 runtime waits at most {}s for one (containerd's plugin_request_timeout, \
                 --nri-request-timeout-seconds), which leaves {budget:?} for the whole hook; \
                 raise plugin_request_timeout in containerd's config together with \
                 --nri-request-timeout-seconds, or lower --cni-timeout-seconds",
                self.nri_request_timeout_seconds
            );
        }
        Ok(())
    }
}

/// Flags of `netclaim check`.
#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// The daemon's state directory (its `--state-dir`; by default the plugin's directory
    /// under the kubelet plugins directory).
    #[arg(
        long,
        env = "NETCLAIM_STATE_DIR",
        default_value = "/var/lib/kubelet/plugins/netclaim.dev"
    )]
    pub state_dir: PathBuf,

    /// Check only this claim (`<namespace>/<name>` or its UID).
    #[arg(long)]
    pub claim: Option<String>,

    /// How CNI plugins run.
    #[command(flatten)]
    pub cni: CniArgs,
}

/// Flags of `netclaim devices`.
#[derive(Clone, Debug, Args)]
pub struct DevicesArgs {
    /// Discovery flags.
    #[command(flatten)]
    pub discovery: DiscoveryArgs,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// PodNetworks to place the devices in (a YAML file: PodNetwork documents, or a List
    /// as `kubectl get podnetworks -o yaml` prints; other objects are skipped): each enabled one of this provider
    /// with valid parameters counts as Ready, and the NETWORK column shows each device's.
    #[arg(long)]
    pub pod_networks: Option<PathBuf>,
}

/// The PodNetworks in `path` (see [`DevicesArgs::pod_networks`]).
///
/// # Errors
/// The file cannot be read or parsed, or a PodNetwork in it does not decode.
pub fn read_pod_networks(path: &std::path::Path) -> Result<Vec<crate::podnetwork::PodNetwork>> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --pod-networks {}", path.display()))?;
    let mut networks = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(document)
            .with_context(|| format!("parsing --pod-networks {}", path.display()))?;
        let items = match value.get("kind").and_then(serde_json::Value::as_str) {
            Some("List" | "PodNetworkList") => value
                .get("items")
                .and_then(serde_json::Value::as_array)
                .cloned()
                .unwrap_or_default(),
            Some("PodNetwork") => vec![value],
            // Other objects of a manifest (DeviceClasses, claims) are skipped.
            Some(_) => continue,
            None if value.is_null() => continue,
            None => anyhow::bail!("--pod-networks {}: a document without kind", path.display()),
        };
        for item in items {
            networks.push(
                serde_json::from_value(item).with_context(|| {
                    format!("--pod-networks {}: not a PodNetwork", path.display())
                })?,
            );
        }
    }
    Ok(networks)
}

/// The discovery configuration of `discovery`, with the PodNetworks of the file `path`
/// (when given and PodNetworks are served) placing the devices in their networks.
///
/// # Errors
/// Bad discovery flags, or a file that cannot be read as PodNetworks.
pub fn discovery_config_with_networks(
    discovery: &DiscoveryArgs,
    path: Option<&std::path::Path>,
) -> Result<DiscoveryConfig> {
    let mut config = discovery.discovery_config()?;
    if let (Some(path), Some(provider)) = (path, discovery.pod_network_provider()) {
        let networks = crate::podnetwork::PodNetworks::default();
        networks.replace(crate::podnetwork::NetworkSet::assuming_ready(
            &read_pod_networks(path)?,
            &provider,
            &discovery.driver_name,
        ));
        config.pod_networks = Some(networks);
    }
    Ok(config)
}

/// `netclaim devices`: one discovery pass in this process's netns, printed to `out`.
pub async fn devices(args: &DevicesArgs, out: &mut impl Write) -> Result<()> {
    let config = discovery_config_with_networks(&args.discovery, args.pod_networks.as_deref())?;
    let discovery = Discovery::open(config)?;
    let mut report = discovery.report().await?;
    report.devices = crate::health::taint_now(
        &report.devices,
        &report.links,
        args.discovery.unhealthy_taint_effect,
    );
    let node = args.discovery.node_name_or_hostname();
    let driver = &args.discovery.driver_name;
    match args.output {
        OutputFormat::Table => write_table(&report, out)?,
        OutputFormat::Json => {
            let slices = discovery::slices::resource_slices(driver, &node, 1, &report.devices);
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": slices});
            serde_json::to_writer_pretty(&mut *out, &list)?;
            writeln!(out)?;
        }
        OutputFormat::Yaml => {
            let slices = discovery::slices::resource_slices(driver, &node, 1, &report.devices);
            out.write_all(discovery::slices::yaml_documents(&slices)?.as_bytes())?;
        }
    }
    out.flush().context("writing the output")
}

/// Writes the devices as a table, then the interfaces left out.
pub fn write_table(report: &Report, out: &mut impl Write) -> Result<()> {
    let header = [
        "DEVICE", "IFNAME", "TYPE", "PCI", "NUMA", "MTU", "STATE", "SHARED", "HEALTH", "IPV4",
        "NETWORK",
    ];
    let rows: Vec<[String; 11]> = report
        .devices
        .iter()
        .map(|d| table_row(d, report.links.get(&d.name)))
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(&header.map(str::to_owned)))?;
    for row in &rows {
        writeln!(out, "{}", line(row))?;
    }
    if !report.skipped.is_empty() {
        writeln!(out, "\nNot published:")?;
        for (if_name, why) in &report.skipped {
            writeln!(out, "  {if_name}: {why}")?;
        }
    }
    Ok(())
}

/// The SHARED column: `no`, or `yes (N children)` for a shared parent NIC.
pub fn shared_cell(device: &Device) -> String {
    match discovery::shared_children(device) {
        Some(children) => format!("yes ({children} children)"),
        None => "no".to_owned(),
    }
}

/// The HEALTH column, from discovery's view of the link: `ok` (up, with carrier when the
/// kernel reports it), `no-carrier` (up without carrier: a cable or peer is missing),
/// `down` (administratively down, or operationally `down`/`lowerlayerdown`), `in-pod` (held
/// by a pod, out of the node's sight), else the kernel's operational state (`dormant`,
/// `unknown` without carrier, ...); `-` when discovery has no link for the device.
pub fn health_cell(link: Option<&DeviceLink>) -> String {
    match link {
        None => "-".to_owned(),
        Some(DeviceLink::InPod) => "in-pod".to_owned(),
        Some(DeviceLink::Host(link)) if !link.admin_up => "down".to_owned(),
        Some(DeviceLink::Host(link)) => match (link.oper_state.as_str(), link.carrier) {
            (_, Some(false)) => "no-carrier".to_owned(),
            ("down" | "lowerlayerdown", _) => "down".to_owned(),
            // Links without operational state tracking report `unknown`; carrier then
            // says whether traffic can flow.
            ("up", _) | ("unknown", Some(true)) => "ok".to_owned(),
            (other, _) => other.to_owned(),
        },
    }
}

fn table_row(device: &Device, link: Option<&DeviceLink>) -> [String; 11] {
    let attr = |name: &str| -> String {
        let Some(a) = device.attributes.as_ref().and_then(|m| m.get(name)) else {
            return "-".to_owned();
        };
        a.string
            .clone()
            .or_else(|| a.int.map(|i| i.to_string()))
            .or_else(|| a.bool.map(|b| b.to_string()))
            .unwrap_or_else(|| "-".to_owned())
    };
    use discovery::names::*;
    let state = match link {
        Some(DeviceLink::Host(link)) if !link.admin_up => "admin-down".to_owned(),
        Some(DeviceLink::Host(link)) if link.carrier == Some(false) => "no-carrier".to_owned(),
        Some(DeviceLink::Host(link)) => link.oper_state.clone(),
        Some(DeviceLink::InPod) => "in-pod".to_owned(),
        None => "-".to_owned(),
    };
    [
        device.name.clone(),
        attr(IF_NAME),
        attr(TYPE),
        attr(PCI_ADDRESS),
        attr(NUMA_NODE),
        attr(MTU),
        state,
        shared_cell(device),
        health_cell(link),
        attr(IPV4),
        attr(netclaim_api::podnetwork::POD_NETWORK_ATTRIBUTE),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod table_tests {
    use super::*;
    use crate::discovery::LinkState;
    use k8s_openapi::api::resource::v1::DeviceCapacity;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn host(admin_up: bool, oper_state: &str, carrier: Option<bool>) -> DeviceLink {
        DeviceLink::Host(LinkState {
            if_name: "eth1".into(),
            admin_up,
            oper_state: oper_state.into(),
            carrier,
        })
    }

    #[test]
    fn health_follows_link_state_and_carrier() {
        let health = |link: DeviceLink| health_cell(Some(&link));
        assert_eq!(health(host(true, "up", Some(true))), "ok");
        assert_eq!(health(host(true, "up", Some(false))), "no-carrier");
        assert_eq!(health(host(true, "down", Some(false))), "no-carrier");
        assert_eq!(health(host(true, "lowerlayerdown", None)), "down");
        assert_eq!(health(host(false, "down", None)), "down");
        assert_eq!(health(host(true, "unknown", Some(true))), "ok");
        assert_eq!(health(host(true, "dormant", None)), "dormant");
        assert_eq!(health(DeviceLink::InPod), "in-pod");
        assert_eq!(health_cell(None), "-");
    }

    #[test]
    fn shared_says_how_many_children() {
        let mut shared = Device {
            name: "d".into(),
            ..Device::default()
        };
        assert_eq!(shared_cell(&shared), "no");
        shared.allow_multiple_allocations = Some(true);
        shared.capacity = Some(
            [(
                discovery::names::CHILDREN.to_owned(),
                DeviceCapacity {
                    value: Quantity("16".into()),
                    ..DeviceCapacity::default()
                },
            )]
            .into(),
        );
        assert_eq!(shared_cell(&shared), "yes (16 children)");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn devices_shows_each_devices_network_from_a_pod_networks_file() {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/podnetwork");
        let networks = read_pod_networks(&example.join("multi-network-poc.yaml")).unwrap();
        let names: Vec<&str> = networks.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["my-dummy-network"], "other kinds are skipped");
        let set = crate::podnetwork::NetworkSet::assuming_ready(
            &networks,
            netclaim_api::DRIVER_NAME,
            netclaim_api::DRIVER_NAME,
        );
        let mut devices: Vec<Device> = ["dummy0", "eth1"]
            .iter()
            .map(|if_name| {
                serde_json::from_value(serde_json::json!({
                    "name": format!("nic-{if_name}"),
                    "attributes": {"ifName": {"string": if_name}}
                }))
                .unwrap()
            })
            .collect();
        for device in &mut devices {
            set.label(netclaim_api::DRIVER_NAME, device);
        }
        let report = Report {
            devices: devices.into_iter().map(std::sync::Arc::new).collect(),
            ..Report::default()
        };
        let mut out = Vec::new();
        write_table(&report, &mut out).unwrap();
        let table = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].ends_with("NETWORK"), "{table}");
        assert!(
            lines[1].starts_with("nic-dummy0") && lines[1].ends_with("my-dummy-network"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("nic-eth1") && lines[2].ends_with('-'),
            "{table}"
        );
    }
}
