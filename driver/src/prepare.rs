//! DRA prepare and unprepare: [`NetclaimDriver`] implements [`kubeletplugin::DraDriver`].
//!
//! Prepare is where slow and failing work happens (design.md, "The path of a claim"): it
//! resolves each allocated `netclaim.dev` device to its host NIC, parses and merges the
//! opaque configs (DeviceClass first, then claim), validates what can be validated before
//! the pod exists, and records the claim in the checkpoint in one durable write. The NRI
//! hooks later read the prepared claims of their pod from the checkpoint's index.
//!
//! # Guarantees
//! - Errors are per claim, start with `claim <namespace>/<name>:` and name the config and
//!   field (`claim config[1] (requests [nic]): interface.mtu: ...`) or the device.
//! - A claim that fails leaves nothing in the checkpoint; one that succeeds is saved with
//!   all its devices at once.
//! - A CNI network referenced as a `networkAttachmentDefinition` is read from the API at
//!   prepare ([`crate::network_attachments`]) and stored resolved: attach never reads it.
//! - The tenant boundary ([`netclaim_api::policy`]) holds at prepare: a claim's network is
//!   one its DeviceClass grants (a NAD it names is in its own namespace unless the class
//!   lists others), what the claim's side wrote has no node path, host device or runtime
//!   key, and every plugin of the network the device will run (IPAM types too) is on the
//!   admin's allowlist; the error names the config and the field. A device-moving plugin
//!   (host-device) is refused on a shared parent, and a NIC it moves is not shared
//!   between claims.
//! - Prepare and unprepare are idempotent, and work from the checkpoint after a restart.
//! - Prepare refuses every claim while the container runtime's NRI connection is down
//!   ([`RuntimeGate`]): a pod whose RunPodSandbox cannot reach netclaim would start without
//!   its NIC, so the kubelet is made to retry until netclaim can attach it.
//! - Disk work (the checkpoint, CDI specs, device metadata) runs on blocking threads, never
//!   on the async runtime's.
//! - With [`ClaimFiles`] ([`NetclaimDriver::with_claim_files`]), a prepared claim's CDI spec
//!   and device metadata files are written before the claim is recorded and the kubelet
//!   answered, and every device's `cdi_device_ids` name its CDI device; a claim that fails
//!   to be recorded leaves no files; unprepare removes them ([`crate::claim_files`]).
//! - Unprepare never forgets a NIC that is still attached to a pod: it detaches it first
//!   (through [`Detacher`]) and keeps the entry when that fails.
//!
//! # Assumptions
//! - The kubelet plugin library serializes prepare and unprepare calls; NRI hooks run
//!   concurrently and only change the attachments and failures of devices.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::resource::v1::{
    DeviceAllocationConfiguration, DeviceRequestAllocationResult, ResourceClaim,
};
use kubeletplugin::{ClaimError, ClaimRef, DraDriver, PrepareResult, PreparedDevice};
use netclaim_api::policy::reference_namespace;
use netclaim_api::{
    CniNetworkList, ConfigError, ConfigSource, NetworkAuthor, NetworkConfig, PluginAllowlist,
    SourcedConfig, merge_for_request, network_source,
};

use crate::checkpoint::{Checkpoint, CheckpointError, ClaimIndex, Durability};
use crate::claim_files::ClaimFiles;
use crate::metrics::{DraMethod, metrics};
use crate::network_attachments::{NetworkAttachments, NoNetworkAttachments};
use crate::nri::plugin::ConnectionState;
use crate::podnetwork::PodNetworks;
use crate::state::{PodRef, PreparedClaim, PreparedNic};

/// A host NIC a published device stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNic {
    /// The interface name on the host.
    pub if_name: String,
    /// The host ifindex.
    pub if_index: u32,
    /// The link kind (`veth`, `macvlan`, ..., empty for a physical NIC).
    pub kind: String,
    /// The largest MTU the NIC accepts, when the kernel reports one.
    pub mtu_max: Option<u32>,
    /// The PCI address (`0000:03:00.0`), when the NIC is a PCI function: CNI plugins that
    /// take a `deviceID` (SR-IOV style) get it.
    pub pci_address: Option<String>,
    /// For a shared parent NIC (published with `allowMultipleAllocations` and the
    /// `netclaim.dev/children` capacity): how many CNI children it may have at once.
    /// `None`: the NIC is allocated to one claim at a time.
    pub shared_children: Option<u32>,
    /// The device as published now (a `resource.k8s.io/v1` `Device`), kept with the
    /// prepared claim so it stays published while the NIC is in a pod.
    pub published: Option<serde_json::Value>,
}

/// Finds the host NIC behind a device name published in this node's ResourceSlices.
///
/// Discovery implements it; tests use a fake.
pub trait HostDevices: Send + Sync + 'static {
    /// The NIC published as `device_name`, or `None` when it is no longer on the host.
    fn host_nic(&self, device_name: &str) -> Option<HostNic>;
}

impl<T: HostDevices + ?Sized> HostDevices for Arc<T> {
    fn host_nic(&self, device_name: &str) -> Option<HostNic> {
        (**self).host_nic(device_name)
    }
}

/// Gives a NIC that is still attached to a pod back to the host, for unprepare when the
/// pod's STOP never came. The attach code implements it; tests use a fake.
pub trait Detacher: Send + Sync + 'static {
    /// Detaches `nic` (which has an `attachment`) of claim `claim_uid`.
    ///
    /// # Errors
    /// A message saying why the NIC could not be given back; unprepare then keeps the claim.
    fn detach(
        &self,
        claim_uid: &str,
        nic: &PreparedNic,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

impl<T: Detacher> Detacher for Arc<T> {
    fn detach(
        &self,
        claim_uid: &str,
        nic: &PreparedNic,
    ) -> impl Future<Output = Result<(), String>> + Send {
        (**self).detach(claim_uid, nic)
    }
}

/// Whether the container runtime can reach netclaim's NRI plugin right now: prepare
/// refuses claims while it cannot, since their pods would start without their NICs.
#[derive(Clone, Debug)]
pub struct RuntimeGate {
    state: Option<tokio::sync::watch::Receiver<ConnectionState>>,
    socket: std::path::PathBuf,
}

/// How long one prepare call waits for the NRI connection before claims are refused.
const GATE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl RuntimeGate {
    /// Open while the NRI plugin whose connection `state` reports (on `socket`) is
    /// registered.
    pub fn nri(
        state: tokio::sync::watch::Receiver<ConnectionState>,
        socket: impl Into<std::path::PathBuf>,
    ) -> Self {
        Self {
            state: Some(state),
            socket: socket.into(),
        }
    }

    /// Always open (tests of prepare alone, tools without a runtime).
    pub fn always_open() -> Self {
        Self {
            state: None,
            socket: std::path::PathBuf::new(),
        }
    }

    /// Waits at most `grace` for the gate to open. A daemon that just started (or took
    /// over in a rolling update) connects to the runtime within milliseconds: a kubelet
    /// call arriving meanwhile waits for it rather than fail. [`RuntimeGate::check`] then
    /// says whether it opened.
    pub async fn settle(&self, grace: std::time::Duration) {
        if let Some(state) = &self.state {
            let mut state = state.clone();
            let connected = state.wait_for(|s| matches!(s, ConnectionState::Connected { .. }));
            // Timing out (or the plugin gone) is for `check` to report.
            let _ = tokio::time::timeout(grace, connected).await;
        }
    }

    /// `Ok` when pods can get their NICs; else why not, for the claim's error.
    ///
    /// # Errors
    /// The NRI connection is down, naming the socket.
    pub fn check(&self) -> Result<(), String> {
        match &self.state {
            None => Ok(()),
            Some(state) => match *state.borrow() {
                ConnectionState::Connected { .. } => Ok(()),
                ConnectionState::Disconnected => Err(format!(
                    "the container runtime's NRI connection is down (socket {}): a pod \
                     started now would run without its NIC, so netclaim refuses to prepare \
                     until the runtime accepts its NRI plugin (is NRI enabled? containerd 1.7 \
                     needs `disable = false` in [plugins.\"io.containerd.nri.v1.nri\"]); the \
                     kubelet retries",
                    self.socket.display()
                )),
            },
        }
    }
}

/// netclaim's [`DraDriver`].
///
/// `H` resolves devices to host NICs (discovery); `D` detaches NICs still in a pod at
/// unprepare (the hooks); `N` reads the NetworkAttachmentDefinitions CNI-mode claims
/// reference (none by default: such claims then fail with a clear error).
pub struct NetclaimDriver<H, D, N = NoNetworkAttachments> {
    checkpoint: Arc<Checkpoint>,
    host: H,
    detacher: D,
    attachments: N,
    driver_name: String,
    gate: RuntimeGate,
    files: Option<ClaimFiles>,
    allowed_plugins: PluginAllowlist,
    pod_networks: Option<PodNetworks>,
}

impl<H: HostDevices, D: Detacher> NetclaimDriver<H, D> {
    /// A driver keeping its prepared claims in `checkpoint`, without API access for
    /// NetworkAttachmentDefinitions (see [`NetclaimDriver::with_network_attachments`]).
    pub fn new(checkpoint: Arc<Checkpoint>, host: H, detacher: D) -> Self {
        Self {
            checkpoint,
            host,
            detacher,
            attachments: NoNetworkAttachments,
            driver_name: netclaim_api::DRIVER_NAME.to_owned(),
            gate: RuntimeGate::always_open(),
            files: None,
            allowed_plugins: PluginAllowlist::default(),
            pod_networks: None,
        }
    }
}

impl<H: HostDevices, D: Detacher, N: NetworkAttachments> NetclaimDriver<H, D, N> {
    /// The same driver, reading referenced NetworkAttachmentDefinitions through
    /// `attachments` (a [`kube::Client`] in the daemon).
    pub fn with_network_attachments<M: NetworkAttachments>(
        self,
        attachments: M,
    ) -> NetclaimDriver<H, D, M> {
        NetclaimDriver {
            checkpoint: self.checkpoint,
            host: self.host,
            detacher: self.detacher,
            attachments,
            driver_name: self.driver_name,
            gate: self.gate,
            files: self.files,
            allowed_plugins: self.allowed_plugins,
            pod_networks: self.pod_networks,
        }
    }

    /// Prepares the devices of `driver_name` (default [`netclaim_api::DRIVER_NAME`]).
    pub fn with_driver_name(mut self, driver_name: impl Into<String>) -> Self {
        self.driver_name = driver_name.into();
        self
    }

    /// Writes each prepared claim's CDI spec and device metadata with `files`, and returns
    /// its devices' CDI ids to the kubelet (without: no files, no ids).
    pub fn with_claim_files(mut self, files: ClaimFiles) -> Self {
        self.files = Some(files);
        self
    }

    /// Refuses claims while `gate` is closed (see [`RuntimeGate`]).
    pub fn with_runtime_gate(mut self, gate: RuntimeGate) -> Self {
        self.gate = gate;
        self
    }

    /// Refuses CNI networks with plugin types outside `allowed` (`--cni-allowed-plugins`;
    /// default [`netclaim_api::policy::DEFAULT_ALLOWED_PLUGINS`]).
    pub fn with_allowed_plugins(mut self, allowed: PluginAllowlist) -> Self {
        self.allowed_plugins = allowed;
        self
    }

    /// Serves PodNetworks: a device's network config is merged under the class's and the
    /// claim's, and a device of a network that is not Ready is refused
    /// ([`crate::podnetwork::NetworkSet::for_prepare`]).
    pub fn with_pod_networks(mut self, networks: PodNetworks) -> Self {
        self.pod_networks = Some(networks);
        self
    }

    /// The checkpoint of prepared claims.
    pub fn checkpoint(&self) -> &Arc<Checkpoint> {
        &self.checkpoint
    }

    /// The prepared claims reserved for the pod with UID `pod_uid`.
    pub fn claims_for_pod(&self, pod_uid: &str) -> Vec<PreparedClaim> {
        self.checkpoint
            .index()
            .claims_for_pod(pod_uid)
            .iter()
            .map(|claim| PreparedClaim::clone(claim))
            .collect()
    }

    /// Prepares one claim (see the [module docs](self)).
    ///
    /// # Errors
    /// A [`ClaimError`] naming the claim and every problem found.
    pub async fn prepare_claim(&self, claim: &ResourceClaim) -> PrepareResult {
        let id = ClaimId::of(claim);
        self.prepare_inner(&id, claim)
            .await
            .map_err(|problems| id.error(&problems))
    }

    /// Unprepares one claim: detaches NICs still attached, then drops its entry.
    ///
    /// # Errors
    /// A [`ClaimError`] when a NIC could not be detached or the checkpoint not saved; the
    /// entry is kept then, so a retry can finish the job.
    pub async fn unprepare_claim(&self, claim: &ClaimRef) -> Result<(), ClaimError> {
        let id = ClaimId {
            namespace: claim.namespace.clone(),
            name: claim.name.clone(),
            uid: claim.uid.clone(),
        };
        self.unprepare_inner(&claim.uid)
            .await
            .map_err(|problems| id.error(&problems))
    }

    async fn prepare_inner(
        &self,
        id: &ClaimId,
        claim: &ResourceClaim,
    ) -> Result<Vec<PreparedDevice>, Vec<String>> {
        let results = our_results(claim, &self.driver_name)?;
        let existing = self.checkpoint.claim(&id.uid).map(Arc::unwrap_or_clone);
        let case = PrepareCase::of(existing, &results);
        if !matches!(case, PrepareCase::NotOurs) {
            self.gate.check().map_err(|why| vec![why])?;
        }
        match case {
            PrepareCase::NotOurs => Ok(Vec::new()),
            PrepareCase::AlreadyPrepared(prepared) => {
                self.refresh_pods(id, pods_of(claim, &id.namespace)).await?;
                // Written again: a reboot empties /var/run/cdi, and the record may have
                // changed since (an attach).
                let current = self
                    .checkpoint
                    .claim(&id.uid)
                    .map_or(prepared, Arc::unwrap_or_clone);
                let ids = self.write_files(&current).await?;
                Ok(prepared_devices(&current, ids))
            }
            PrepareCase::ReallocatedWhileAttached => Err(vec![
                "the checkpoint holds other devices for this claim, still attached to a pod; \
                 unprepare it first"
                    .to_owned(),
            ]),
            PrepareCase::New => {
                let (prepared, shared) = self.plan(id, claim, &results).await?;
                let ids = self.write_files(&prepared).await?;
                let devices = prepared_devices(&prepared, ids);
                if let Err(problems) = self.store(prepared, shared).await {
                    self.restore_files(&id.uid).await;
                    return Err(problems);
                }
                Ok(devices)
            }
        }
    }

    /// Parses, merges and resolves everything of the claim; no side effects (NADs are
    /// only read).
    ///
    /// Also returns the shared parents among the devices: device name to its number of
    /// CNI children, as the host NIC said when it was resolved.
    async fn plan(
        &self,
        id: &ClaimId,
        claim: &ResourceClaim,
        results: &[&DeviceRequestAllocationResult],
    ) -> Result<(PreparedClaim, BTreeMap<String, u32>), Vec<String>> {
        let configs = parse_configs(claim, &self.driver_name)?;
        let mut problems = Vec::new();
        let mut nics = Vec::new();
        let mut shared = BTreeMap::new();
        for result in results {
            match self.prepare_nic(id, result, &configs).await {
                Ok((nic, shared_children)) => {
                    if let Some(children) = shared_children {
                        shared.insert(nic.device.clone(), children);
                    }
                    nics.push(nic);
                }
                Err(mut more) => problems.append(&mut more),
            }
        }
        // Devices sharing one bad NAD reference would repeat its error.
        problems.dedup();
        if !problems.is_empty() {
            return Err(problems);
        }
        if let Some(files) = &self.files {
            files.resolve_rdma(&mut nics).await;
        }
        let prepared = PreparedClaim {
            uid: id.uid.clone(),
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            pods: pods_of(claim, &id.namespace),
            pod_claim_name: claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::device_metadata::POD_CLAIM_NAME_ANNOTATION))
                .cloned(),
            nics,
        };
        Ok((prepared, shared))
    }

    /// One device: its merged config and host NIC, checked against each other; with the
    /// host NIC's number of CNI children when it is a shared parent.
    async fn prepare_nic(
        &self,
        id: &ClaimId,
        result: &DeviceRequestAllocationResult,
        configs: &[SourcedConfig],
    ) -> Result<(PreparedNic, Option<u32>), Vec<String>> {
        let what = format!(
            "device {} (pool {}, request {})",
            result.device, result.pool, result.request
        );
        let host = self
            .host
            .host_nic(&result.device)
            .ok_or_else(|| format!("{what}: not found on this node (the NIC is gone or renamed)"));
        let pod_network = match &host {
            Ok(host) => self
                .pod_network_of(host)
                .map_err(|why| format!("{what}: {why}")),
            Err(_) => Ok(None),
        };
        // The device's PodNetwork config comes first, as an admin's (see
        // netclaim_api::merge): the class and the claim refine it where allowed.
        let with_network: Vec<SourcedConfig>;
        let configs = match &pod_network {
            Ok(Some((name, Some(config)))) => {
                let mut all = configs.to_vec();
                let parsed = SourcedConfig {
                    source: ConfigSource::Network,
                    requests: Vec::new(),
                    index: 0,
                    config: config.clone(),
                };
                tracing::debug!(network = %name, device = %result.device, "merging the PodNetwork's config");
                all.push(parsed);
                with_network = all;
                with_network.as_slice()
            }
            _ => configs,
        };
        // Each config was validated when parsed; what is left are conflicts between the
        // configs that apply to this request, so name the device they meet on.
        let merged = merge_for_request(configs, &result.request).map_err(|error| {
            config_problems(error)
                .into_iter()
                .map(|problem| format!("{what}: {problem}"))
                .collect::<Vec<_>>()
        });
        let (merged, host, pod_network) = match (merged, host, pod_network) {
            (Ok(merged), Ok(host), Ok(pod_network)) => {
                (merged, host, pod_network.map(|(name, _)| name))
            }
            (merged, host, pod_network) => {
                let mut problems = Vec::new();
                problems.extend(pod_network.err());
                problems.extend(merged.err().unwrap_or_default());
                problems.extend(host.err());
                return Err(problems);
            }
        };
        if let Some(children) = host.shared_children
            && merged.cni.is_none()
        {
            return Err(vec![format!(
                "{what}: host NIC {} is a shared parent (up to {children} CNI children for \
                 other claims); a config without `cni` would move the NIC itself into this \
                 pod and cut the others off: give the claim a CNI network (macvlan, ipvlan) \
                 or use a device that is not shared",
                host.if_name
            )]);
        }
        let network = self
            .cni_network(id, &what, configs, result, &merged, &host)
            .await?;
        if let (Some(children), Some(network)) = (host.shared_children, &network)
            && moves_device(&network.list)
        {
            return Err(vec![format!(
                "{what}: host NIC {} is a shared parent (up to {children} CNI children for \
                 other claims), and {} would move it into this pod and cut the others off: \
                 use a plugin that makes a child (macvlan, ipvlan), or a device that is not \
                 shared",
                host.if_name,
                network
                    .list
                    .plugins
                    .first()
                    .and_then(netclaim_api::CniPlugin::plugin_type)
                    .unwrap_or_default()
            )]);
        }
        if let (Some(mtu), Some(max)) = (merged.interface.mtu, host.mtu_max)
            && mtu > max
        {
            return Err(vec![format!(
                "{what}: interface.mtu: {mtu} is above the maximum {max} of host NIC {}",
                host.if_name
            )]);
        }
        let nic = PreparedNic {
            request: result.request.clone(),
            pool: result.pool.clone(),
            device: result.device.clone(),
            share_id: result.share_id.clone(),
            host_if_name: host.if_name,
            pci_address: host.pci_address,
            config: merged.interface,
            cni: network.as_ref().map(|n| n.list.to_json()),
            network_attachment_definition: network.and_then(|n| n.attachment_definition),
            published: host.published,
            attachment: None,
            failure: None,
            rdma: None,
            consumed_capacity: result
                .consumed_capacity
                .iter()
                .flatten()
                .map(|(name, quantity)| (name.clone(), quantity.0.clone()))
                .collect(),
            pod_network,
        };
        Ok((nic, host.shared_children))
    }

    /// The PodNetwork of the device `host` stands for, with its config (see
    /// [`crate::podnetwork::NetworkSet::for_prepare`]); `None` without PodNetworks.
    fn pod_network_of(
        &self,
        host: &HostNic,
    ) -> Result<Option<(String, Option<NetworkConfig>)>, String> {
        let (Some(networks), Some(published)) = (&self.pod_networks, &host.published) else {
            return Ok(None);
        };
        let Ok(device) = serde_json::from_value(published.clone()) else {
            return Ok(None);
        };
        networks.current().for_prepare(&self.driver_name, &device)
    }

    /// CNI mode: the network list to run for the device, with the device substituted into
    /// the first plugin (`cni.deviceField` or the type's default); `None` without `cni`.
    ///
    /// A `networkAttachmentDefinition` is read from the API here, once: the list is stored
    /// in the checkpoint, so attach never reads the API and a NAD edited later does not
    /// change the claim. Its errors name the config that references it.
    async fn cni_network(
        &self,
        id: &ClaimId,
        what: &str,
        configs: &[SourcedConfig],
        result: &DeviceRequestAllocationResult,
        merged: &NetworkConfig,
        host: &HostNic,
    ) -> Result<Option<CniNetwork>, Vec<String>> {
        let Some(cni) = &merged.cni else {
            return Ok(None);
        };
        let source = network_source(configs, &result.request);
        let label = source.map_or_else(|| "merged config".to_owned(), SourcedConfig::label);
        let chooser = source.map_or(ConfigSource::Claim, |sourced| sourced.source);
        // Errors about the network's contents: inline ones at `cni.<field>`, a NAD's
        // under its reference and `spec.config`.
        let (list, attachment_definition, author, within) = match &cni.network_attachment_definition
        {
            Some(reference) => {
                let namespace = reference_namespace(reference, &id.namespace);
                let name = &reference.name;
                let within = format!(
                    "{label}: cni.networkAttachmentDefinition: {namespace}/{name}: spec.config: "
                );
                if chooser == ConfigSource::Claim {
                    self.check_claim_reference(&label, id, cni, namespace)?;
                }
                let list = crate::network_attachments::resolve(&self.attachments, namespace, name)
                    .await
                    .map_err(|error| {
                        vec![format!(
                            "{label}: cni.networkAttachmentDefinition: {namespace}/{name}: {error}"
                        )]
                    })?;
                let author = NetworkAuthor::of(chooser, Some(namespace), &id.namespace);
                (list, Some(format!("{namespace}/{name}")), author, within)
            }
            None => {
                let list = cni.inline_network().ok_or_else(|| {
                    vec![format!(
                        "{what}: cni: the merged config names no complete network (cniVersion, \
                         name, plugins)"
                    )]
                })?;
                let author = NetworkAuthor::of(chooser, None, &id.namespace);
                (list, None, author, format!("{label}: cni."))
            }
        };
        let named = |error: ConfigError| -> Vec<String> {
            error
                .errors
                .iter()
                .map(|e| format!("{within}{e}"))
                .collect()
        };
        if author == NetworkAuthor::Claim {
            netclaim_api::policy::check_claim_network(&list, cni.device_field.as_deref())
                .map_err(named)?;
        }
        // The claim's overrides were checked against the class's grants when the configs
        // were merged; their paths name fields of whichever network runs.
        let list = netclaim_api::policy::apply_plugin_overrides(&list, &cni.plugin_overrides)
            .map_err(|error| {
                error
                    .errors
                    .iter()
                    .map(|e| format!("{what}: {e}"))
                    .collect::<Vec<_>>()
            })?;
        netclaim_api::policy::check_plugins(&list, &self.allowed_plugins).map_err(named)?;
        let device = crate::cni::DeviceRef {
            ifname: host.if_name.clone(),
            pci_address: host.pci_address.clone(),
        };
        let list = crate::cni::substitute_device(&list, cni.device_field.as_deref(), &device)
            .map_err(|error| vec![format!("{what}: {error}")])?;
        Ok(Some(CniNetwork {
            list,
            attachment_definition,
        }))
    }

    /// A NAD a claim names must be in a namespace its class lets claims use: the claim's
    /// own, or one of `claimMayBring.networkAttachmentDefinition.otherNamespaces`.
    fn check_claim_reference(
        &self,
        label: &str,
        id: &ClaimId,
        cni: &netclaim_api::CniConfig,
        namespace: &str,
    ) -> Result<(), Vec<String>> {
        let grant = cni
            .claim_may_bring
            .as_ref()
            .and_then(|bring| bring.network_attachment_definition.as_ref());
        match grant {
            Some(grant) if grant.permits(&id.namespace, namespace) => Ok(()),
            Some(grant) => Err(vec![format!(
                "{label}: cni.networkAttachmentDefinition.namespace: {namespace:?} is not the \
                 claim's namespace ({}), and the DeviceClass lets claims name \
                 NetworkAttachmentDefinitions only in: {} (an admin adds namespaces with \
                 cni.claimMayBring.networkAttachmentDefinition.otherNamespaces)",
                id.namespace,
                grant.describe()
            )]),
            // Merging refused a claim's reference without the grant already.
            None => Err(vec![format!(
                "{label}: cni.networkAttachmentDefinition: the DeviceClass does not let \
                 claims name NetworkAttachmentDefinitions"
            )]),
        }
    }

    /// Checks the claim against the other prepared claims and saves it durably.
    ///
    /// `shared`: the claim's shared parent devices and their numbers of children. The
    /// check reads the index: prepare calls are serialized, and the hooks only change
    /// attachments, which the check does not look at.
    async fn store(
        &self,
        prepared: PreparedClaim,
        shared: BTreeMap<String, u32>,
    ) -> Result<(), Vec<String>> {
        let problems = conflicts(&self.checkpoint.index(), &prepared, &shared);
        if !problems.is_empty() {
            return Err(problems);
        }
        let uid = prepared.uid.clone();
        self.checkpoint
            .update_async(&uid, Durability::Durable, move |_| {
                Ok::<_, CheckpointError>((Some(prepared), ()))
            })
            .await
            .map_err(|error| vec![error.to_string()])
    }

    /// Writes the claim's CDI spec and metadata files; its devices' CDI ids (none without
    /// [`ClaimFiles`]).
    async fn write_files(&self, claim: &PreparedClaim) -> Result<Vec<Vec<String>>, Vec<String>> {
        match &self.files {
            None => Ok(vec![Vec::new(); claim.nics.len()]),
            Some(files) => files
                .write(claim)
                .await
                .map_err(|e| vec![format!("writing the claim's CDI spec: {e}")]),
        }
    }

    /// After a failed record: the files are made to match the checkpoint again (written
    /// from the record it still holds for the claim, else removed).
    async fn restore_files(&self, uid: &str) {
        let Some(files) = &self.files else { return };
        let outcome = match self.checkpoint.claim(uid) {
            Some(recorded) => files.write(&recorded).await.map(|_| ()),
            None => files.remove(uid).await,
        };
        if let Err(error) = outcome {
            tracing::warn!(
                claim = uid,
                "restoring the claim's CDI files: {error}; the next start cleans up"
            );
        }
    }

    /// Removes the claim's CDI spec and metadata files (idempotent).
    async fn remove_files(&self, uid: &str) -> Result<(), Vec<String>> {
        match &self.files {
            None => Ok(()),
            Some(files) => files
                .remove(uid)
                .await
                .map_err(|e| vec![format!("removing the claim's CDI spec: {e}")]),
        }
    }

    /// Keeps the claim's pod list current on a retry (a shared claim may gain pods).
    async fn refresh_pods(&self, id: &ClaimId, pods: Vec<PodRef>) -> Result<(), Vec<String>> {
        self.checkpoint
            .update_async(&id.uid, Durability::Durable, move |current| {
                let claim = current.cloned().map(|mut claim| {
                    claim.pods = pods;
                    claim
                });
                Ok::<_, CheckpointError>((claim, ()))
            })
            .await
            .map_err(|error| vec![error.to_string()])
    }

    async fn unprepare_inner(&self, uid: &str) -> Result<(), Vec<String>> {
        match UnprepareCase::of(self.checkpoint.claim(uid).map(Arc::unwrap_or_clone)) {
            // Files of a claim the checkpoint forgot (a crash after forgetting it) go too.
            UnprepareCase::Unknown => self.remove_files(uid).await,
            UnprepareCase::Detached => {
                self.forget(uid).await?;
                self.remove_files(uid).await
            }
            UnprepareCase::StillAttached(claim) => {
                let mut problems = Vec::new();
                for nic in claim.nics.iter().filter(|nic| nic.attachment.is_some()) {
                    let detached = match self.detacher.detach(uid, nic).await {
                        Ok(()) => self
                            .checkpoint
                            .update_nic(
                                uid,
                                &nic.device,
                                nic.share_id.as_deref(),
                                Durability::Volatile,
                                |n| {
                                    n.attachment = None;
                                },
                            )
                            .await
                            .map_err(|e| e.to_string()),
                        Err(error) => Err(error),
                    };
                    if let Err(error) = detached {
                        problems.push(format!(
                            "device {} is still attached to pod sandbox {} and could not be \
                             detached: {error}",
                            nic.device,
                            nic.attachment
                                .as_ref()
                                .map_or("?", |a| a.sandbox_id.as_str())
                        ));
                    }
                }
                if problems.is_empty() {
                    self.forget(uid).await?;
                    self.remove_files(uid).await
                } else {
                    Err(problems)
                }
            }
        }
    }

    /// Removes the claim's record, unless a device of it is (again) in a pod.
    async fn forget(&self, uid: &str) -> Result<(), Vec<String>> {
        self.checkpoint
            .update_async(uid, Durability::Durable, |current| match current {
                Some(claim) if claim.has_attachments() => Err(Refused::Problems(vec![
                    "a device of the claim is still attached to a pod".to_owned(),
                ])),
                _ => Ok((None, ())),
            })
            .await
            .map_err(Refused::into_problems)
    }
}

impl<H: HostDevices, D: Detacher, N: NetworkAttachments> DraDriver for NetclaimDriver<H, D, N> {
    async fn prepare(&self, claims: Vec<ResourceClaim>) -> BTreeMap<String, PrepareResult> {
        let started = std::time::Instant::now();
        self.gate.settle(GATE_GRACE).await;
        let mut results = BTreeMap::new();
        for claim in &claims {
            results.insert(ClaimId::of(claim).uid, self.prepare_claim(claim).await);
        }
        let failed = results.values().filter(|r| r.is_err()).count();
        metrics().dra_call(
            DraMethod::Prepare,
            results.len() - failed,
            failed,
            started.elapsed(),
        );
        results
    }

    async fn unprepare(&self, claims: Vec<ClaimRef>) -> BTreeMap<String, Result<(), ClaimError>> {
        let started = std::time::Instant::now();
        let mut results = BTreeMap::new();
        for claim in &claims {
            results.insert(claim.uid.clone(), self.unprepare_claim(claim).await);
        }
        let failed = results.values().filter(|r| r.is_err()).count();
        metrics().dra_call(
            DraMethod::Unprepare,
            results.len() - failed,
            failed,
            started.elapsed(),
        );
        results
    }
}

/// Where a claim stands for prepare, derived from the claim and the checkpoint.
enum PrepareCase {
    /// No device of the allocation is ours.
    NotOurs,
    /// The checkpoint already holds this claim with the same devices: a retry.
    AlreadyPrepared(PreparedClaim),
    /// The checkpoint holds other devices for this UID and one is in a pod.
    ReallocatedWhileAttached,
    /// Not prepared yet (or prepared with other devices, none attached: redone).
    New,
}

impl PrepareCase {
    fn of(existing: Option<PreparedClaim>, results: &[&DeviceRequestAllocationResult]) -> Self {
        if results.is_empty() {
            return PrepareCase::NotOurs;
        }
        let wanted: BTreeSet<_> = results
            .iter()
            .map(|r| {
                (
                    r.request.as_str(),
                    r.pool.as_str(),
                    r.device.as_str(),
                    r.share_id.as_deref(),
                )
            })
            .collect();
        match existing {
            None => PrepareCase::New,
            Some(prepared) => {
                let have: BTreeSet<_> = prepared
                    .nics
                    .iter()
                    .map(|n| {
                        (
                            n.request.as_str(),
                            n.pool.as_str(),
                            n.device.as_str(),
                            n.share_id.as_deref(),
                        )
                    })
                    .collect();
                if have == wanted {
                    PrepareCase::AlreadyPrepared(prepared.clone())
                } else if prepared.nics.iter().any(|nic| nic.attachment.is_some()) {
                    PrepareCase::ReallocatedWhileAttached
                } else {
                    PrepareCase::New
                }
            }
        }
    }
}

/// Where a claim stands for unprepare.
enum UnprepareCase {
    /// Not in the checkpoint: never prepared, or already unprepared.
    Unknown,
    /// Prepared, no NIC in a pod.
    Detached,
    /// Prepared, and at least one NIC still in (or moving to or from) a pod.
    StillAttached(PreparedClaim),
}

impl UnprepareCase {
    fn of(existing: Option<PreparedClaim>) -> Self {
        match existing {
            None => UnprepareCase::Unknown,
            Some(claim) if claim.nics.iter().any(|nic| nic.attachment.is_some()) => {
                UnprepareCase::StillAttached(claim)
            }
            Some(_) => UnprepareCase::Detached,
        }
    }
}

/// A claim's identity, for results and error messages.
struct ClaimId {
    namespace: String,
    name: String,
    uid: String,
}

impl ClaimId {
    fn of(claim: &ResourceClaim) -> Self {
        Self {
            namespace: claim.metadata.namespace.clone().unwrap_or_default(),
            name: claim.metadata.name.clone().unwrap_or_default(),
            uid: claim.metadata.uid.clone().unwrap_or_default(),
        }
    }

    fn error(&self, problems: &[String]) -> ClaimError {
        ClaimError::new(format!(
            "claim {}/{}: {}",
            self.namespace,
            self.name,
            problems.join("; ")
        ))
    }
}

/// Either a refusal with problems or a failed save, from a checkpoint update.
enum Refused {
    Problems(Vec<String>),
    Save(CheckpointError),
}

impl From<CheckpointError> for Refused {
    fn from(error: CheckpointError) -> Self {
        Refused::Save(error)
    }
}

impl Refused {
    fn into_problems(self) -> Vec<String> {
        match self {
            Refused::Problems(problems) => problems,
            Refused::Save(error) => vec![error.to_string()],
        }
    }
}

/// The allocation results for the driver `driver_name`.
fn our_results<'a>(
    claim: &'a ResourceClaim,
    driver_name: &str,
) -> Result<Vec<&'a DeviceRequestAllocationResult>, Vec<String>> {
    let devices = claim
        .status
        .as_ref()
        .and_then(|status| status.allocation.as_ref())
        .and_then(|allocation| allocation.devices.as_ref());
    let Some(devices) = devices else {
        return Err(vec![
            "status.allocation.devices: the claim is not allocated".to_owned(),
        ]);
    };
    Ok(devices
        .results
        .iter()
        .flatten()
        .filter(|result| result.driver == driver_name)
        .collect())
}

/// Parses every opaque config of the allocation for `driver_name`; collects all problems.
///
/// Each config's `index` is its position among the allocation's configs of the same source
/// (all drivers counted), which for claim configs is its index in `spec.devices.config`.
fn parse_configs(
    claim: &ResourceClaim,
    driver_name: &str,
) -> Result<Vec<SourcedConfig>, Vec<String>> {
    let entries = claim
        .status
        .as_ref()
        .and_then(|status| status.allocation.as_ref())
        .and_then(|allocation| allocation.devices.as_ref())
        .and_then(|devices| devices.config.as_deref())
        .unwrap_or_default();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut configs = Vec::new();
    let mut problems = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        let counter = seen.entry(entry.source.as_str()).or_default();
        let index = *counter;
        *counter += 1;
        match parse_entry(entry, index, driver_name) {
            Ok(Some(config)) => configs.push(config),
            Ok(None) => {}
            Err(mut more) => {
                if more.is_empty() {
                    more.push(format!(
                        "status.allocation.devices.config[{position}]: invalid"
                    ));
                }
                problems.append(&mut more);
            }
        }
    }
    if problems.is_empty() {
        Ok(configs)
    } else {
        Err(problems)
    }
}

/// One allocation config entry: `None` when it is for another driver.
fn parse_entry(
    entry: &DeviceAllocationConfiguration,
    index: usize,
    driver_name: &str,
) -> Result<Option<SourcedConfig>, Vec<String>> {
    let Some(opaque) = entry.opaque.as_ref().filter(|o| o.driver == driver_name) else {
        return Ok(None);
    };
    let source = match entry.source.as_str() {
        "FromClass" => ConfigSource::Class,
        "FromClaim" => ConfigSource::Claim,
        other => {
            return Err(vec![format!(
                "config[{index}]: source {other:?} is neither FromClass nor FromClaim"
            )]);
        }
    };
    let requests = entry.requests.clone().unwrap_or_default();
    let raw = serde_json::to_vec(&opaque.parameters.0).map_err(|error| vec![error.to_string()])?;
    SourcedConfig::parse(source, requests, index, &raw)
        .map(Some)
        .map_err(config_problems)
}

fn config_problems(error: ConfigError) -> Vec<String> {
    error.errors.iter().map(ToString::to_string).collect()
}

/// The pods in `status.reservedFor` (pods are in the claim's namespace).
fn pods_of(claim: &ResourceClaim, namespace: &str) -> Vec<PodRef> {
    claim
        .status
        .as_ref()
        .and_then(|status| status.reserved_for.as_ref())
        .into_iter()
        .flatten()
        .filter(|consumer| {
            consumer.resource == "pods" && consumer.api_group.as_deref().unwrap_or("").is_empty()
        })
        .map(|consumer| PodRef {
            namespace: namespace.to_owned(),
            name: consumer.name.clone(),
            uid: consumer.uid.clone(),
        })
        .collect()
}

/// The name a NIC will have inside its pod.
fn pod_if_name(nic: &PreparedNic) -> &str {
    nic.pod_if_name()
}

/// Problems between `claim` and itself or the other prepared claims: a NIC prepared twice,
/// two NICs wanting one name in one pod, a shared parent NIC (`shared`: its device name
/// and number of children) with more CNI children than it has.
///
/// The scheduler already counts a shared parent's `netclaim.dev/children` capacity; this
/// count is defence in depth against allocations it did not make (a stale slice, another
/// scheduler, a hand-written status) that would overload the NIC.
fn conflicts(
    index: &ClaimIndex,
    claim: &PreparedClaim,
    shared: &BTreeMap<String, u32>,
) -> Vec<String> {
    let others: Vec<&PreparedClaim> = index
        .claims()
        .map(|c| c.as_ref())
        .filter(|c| c.uid != claim.uid)
        .collect();
    let mut problems = Vec::new();
    let mut names: BTreeMap<&str, &PreparedNic> = BTreeMap::new();
    for nic in &claim.nics {
        let name = pod_if_name(nic);
        if let Some(first) = names.insert(name, nic) {
            problems.push(format!(
                "devices {} and {}: both want interface.name {name:?} inside the pod",
                first.device, nic.device
            ));
        }
    }
    problems.extend(allocated_twice(claim));
    for other in &others {
        let same_pod = other.pods.iter().any(|pod| claim.is_for_pod(&pod.uid));
        for theirs in &other.nics {
            for nic in &claim.nics {
                // CNI mode leaves the NIC on the host (it is a parent, not moved), so
                // CNI-mode claims may share it (a shared parent counts them below).
                // A host-device network moves the NIC, so it is not shared.
                let shared_parent = theirs.cni.is_some()
                    && nic.cni.is_some()
                    && !nic_moves_device(theirs)
                    && !nic_moves_device(nic);
                if theirs.pool == nic.pool && theirs.device == nic.device && !shared_parent {
                    problems.push(format!(
                        "device {} (pool {}) is already prepared for claim {}/{}",
                        nic.device, nic.pool, other.namespace, other.name
                    ));
                } else if same_pod && pod_if_name(theirs) == pod_if_name(nic) {
                    problems.push(format!(
                        "device {}: interface.name {:?} is already taken in the pod by device {} \
                         of claim {}/{}",
                        nic.device,
                        pod_if_name(nic),
                        theirs.device,
                        other.namespace,
                        other.name
                    ));
                }
            }
        }
    }
    problems.extend(over_capacity(&others, claim, shared));
    problems
}

/// One device allocated twice to `claim`: only a shared parent in CNI mode may be, each
/// allocation with its own `shareID` (each gets its own child, CNI cache entry and status
/// entry; the names inside the pod already differ, see [`conflicts`]).
fn allocated_twice(claim: &PreparedClaim) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, nic) in claim.nics.iter().enumerate() {
        for earlier in &claim.nics[..index] {
            if earlier.pool != nic.pool || earlier.device != nic.device {
                continue;
            }
            let distinct_shares = nic.share_id.is_some() && earlier.share_id != nic.share_id;
            if !distinct_shares || nic.cni.is_none() || earlier.cni.is_none() {
                problems.push(format!(
                    "device {} (pool {}) is allocated twice to this claim (requests {} and {}); \
                     only a shared parent NIC in CNI mode can be, each allocation with its own \
                     shareID",
                    nic.device, nic.pool, earlier.request, nic.request
                ));
            }
        }
    }
    problems
}

/// Shared parents of `claim` that would have more CNI children than their capacity.
fn over_capacity(
    others: &[&PreparedClaim],
    claim: &PreparedClaim,
    shared: &BTreeMap<String, u32>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    for nic in &claim.nics {
        let Some(&children) = shared.get(&nic.device) else {
            continue;
        };
        if !checked.insert((&nic.pool, &nic.device)) {
            continue;
        }
        let on_device = |n: &&PreparedNic| n.pool == nic.pool && n.device == nic.device;
        let mine = claim.nics.iter().filter(on_device).count();
        let holders: Vec<String> = others
            .iter()
            .flat_map(|other| {
                other
                    .nics
                    .iter()
                    .filter(on_device)
                    .map(move |_| format!("{}/{}", other.namespace, other.name))
            })
            .collect();
        let wanted = holders.len() + mine;
        if wanted > usize::try_from(children).unwrap_or(usize::MAX) {
            problems.push(format!(
                "device {} (pool {}): over capacity: shared parent NIC {} has room for \
                 {children} CNI children (capacity {}), {} in use by {}, and this claim \
                 wants {mine} more",
                nic.device,
                nic.pool,
                nic.host_if_name,
                netclaim_api::attributes::CHILDREN,
                holders.len(),
                if holders.is_empty() {
                    "no other claim".to_owned()
                } else {
                    holders.join(", ")
                },
            ));
        }
    }
    problems
}

/// A device's resolved CNI network.
struct CniNetwork {
    /// The list to run, the device substituted.
    list: CniNetworkList,
    /// `<namespace>/<name>` when it came from a NetworkAttachmentDefinition.
    attachment_definition: Option<String>,
}

/// Whether a network moves the allocated device itself into the pod (host-device) rather
/// than making a child of it: such a NIC cannot be shared.
fn moves_device(list: &CniNetworkList) -> bool {
    list.plugins
        .first()
        .and_then(netclaim_api::CniPlugin::plugin_type)
        == Some("host-device")
}

/// Whether a prepared NIC's network moves the device (see [`moves_device`]).
fn nic_moves_device(nic: &PreparedNic) -> bool {
    nic.cni
        .as_ref()
        .is_some_and(|list| list["plugins"][0]["type"].as_str() == Some("host-device"))
}

/// What the kubelet is told for a prepared claim; `cdi_ids` per device, in order.
fn prepared_devices(claim: &PreparedClaim, cdi_ids: Vec<Vec<String>>) -> Vec<PreparedDevice> {
    claim
        .nics
        .iter()
        .zip(cdi_ids.into_iter().chain(std::iter::repeat_with(Vec::new)))
        .map(|(nic, cdi_device_ids)| PreparedDevice {
            requests: vec![nic.request.clone()],
            pool_name: nic.pool.clone(),
            device_name: nic.device.clone(),
            cdi_device_ids,
            share_id: nic.share_id.clone(),
        })
        .collect()
}

/// Discovery's inventory resolves published device names to host NICs.
impl HostDevices for crate::discovery::Inventory {
    fn host_nic(&self, device_name: &str) -> Option<HostNic> {
        self.host_device(device_name).map(|nic| HostNic {
            if_name: nic.if_name,
            if_index: nic.if_index,
            kind: nic.kind.unwrap_or_default(),
            mtu_max: None,
            pci_address: nic.pci_address,
            shared_children: nic.shared_children,
            published: self
                .published_device(device_name)
                .and_then(|device| serde_json::to_value(device).ok()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_names_the_socket_and_how_to_enable_nri() {
        let (tx, rx) = tokio::sync::watch::channel(ConnectionState::Disconnected);
        let gate = RuntimeGate::nri(rx, "/var/run/nri/nri.sock");
        let why = gate.check().unwrap_err();
        assert!(
            why.contains("NRI connection is down (socket /var/run/nri/nri.sock)"),
            "{why}"
        );
        assert!(why.contains("disable = false"), "{why}");
        tx.send_replace(ConnectionState::Connected { session: 1 });
        assert_eq!(gate.check(), Ok(()));
        assert_eq!(RuntimeGate::always_open().check(), Ok(()));
    }
}
