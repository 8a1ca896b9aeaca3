//! A kubelet stand-in: the kubelet's side of plugin registration and of the DRA gRPC
//! services, over the same unix sockets and with the same messages, deadlines and checks a
//! real kubelet uses.
//!
//! What it does, as the kubelet does:
//! - watches the registration directory for new `*.sock` files (hidden files are skipped);
//! - calls `pluginregistration.Registration/GetInfo` with a 1 s deadline, checks the plugin
//!   type (`DRAPlugin`) and that one of the DRA services it knows (`v1.DRAPlugin`,
//!   `v1beta1.DRAPlugin`) is offered, connects to the advertised endpoint, and reports the
//!   outcome with `NotifyRegistrationStatus`;
//! - retries a socket whose `GetInfo` fails, as the kubelet's plugin manager reconciler does,
//!   and keeps the last failure per socket: [`KubeletStandIn::probe_errors`], and in the error
//!   of a wait that runs out;
//! - calls `NodePrepareResources` / `NodeUnprepareResources` of either version with the
//!   kubelet's 45 s per-call timeout;
//! - picks the health service as the kubelet does since 1.36 (`pickHealthService` in
//!   `pkg/kubelet/cm/dra/plugin`): `v1.DRAResourceHealth` when the registration lists it,
//!   else `v1alpha1.DRAResourceHealth` when listed, else none
//!   ([`DraClient::health_version`]); [`DraClient::watch_health_version`] opens a given
//!   version regardless, as the 1.34 kubelet opened v1alpha1 on every plugin. The health
//!   messages come from the stand-in's own copy of the official protos
//!   (`test/proto/kubelet_dra_health_*.proto`), not the plugin library's;
//! - refuses a response as the kubelet's DRA manager does (`pkg/kubelet/cm/dra/manager.go`,
//!   `prepareResources` and `unprepareResources`): a result for a claim UID it did not ask
//!   for fails the call with "NodePrepareResources returned result for unknown claim UID
//!   <uid>", and a response missing claims with "NodePrepareResources skipped <n>
//!   ResourceClaims" (the same with `NodeUnprepareResources`).
//!
//! What it does not model: the kubelet's claim cache and retries, pod admission, the
//! periodic re-registration after plugin restarts (call [`KubeletStandIn::wait_for_plugin`]
//! again), the wiping of ResourceSlices 30 s after a driver disappears, the health cache
//! (a device not reported within its `health_check_timeout_seconds` turning `Unknown`) and
//! the pod status it feeds, and the re-opening of a health stream that ended. Where the
//! kubelet stops at the first claim with an error, the stand-in returns every claim's
//! outcome, so that tests can check each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use kubeletplugin::ClaimRef;
use kubeletplugin::proto::registration::registration_client::RegistrationClient;
use kubeletplugin::proto::registration::{InfoRequest, PluginInfo, RegistrationStatus};
use kubeletplugin::proto::{dra_v1, dra_v1beta1};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The kubelet's deadline for `GetInfo`.
pub const GET_INFO_TIMEOUT: Duration = Duration::from_secs(1);
/// The kubelet's timeout for each DRA call.
pub const DRA_CALL_TIMEOUT: Duration = Duration::from_secs(45);
/// How often the registration directory is re-read while waiting for a plugin.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A version of the kubelet's `DRAPlugin` service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DraApiVersion {
    /// `k8s.io.kubelet.pkg.apis.dra.v1` (`v1.DRAPlugin`), with share ids.
    V1,
    /// `k8s.io.kubelet.pkg.apis.dra.v1beta1` (`v1beta1.DRAPlugin`).
    V1beta1,
}

impl DraApiVersion {
    /// Both versions, in the kubelet's order of preference.
    pub const ALL: [DraApiVersion; 2] = [DraApiVersion::V1, DraApiVersion::V1beta1];

    /// The name a plugin advertises in `PluginInfo.supported_versions`.
    pub fn service_name(self) -> &'static str {
        match self {
            DraApiVersion::V1 => "v1.DRAPlugin",
            DraApiVersion::V1beta1 => "v1beta1.DRAPlugin",
        }
    }
}

/// The stand-in's own generated code for the kubelet's health protos.
#[allow(missing_docs, clippy::all)]
pub mod health_proto {
    /// `v1.DRAResourceHealth`.
    pub mod v1 {
        tonic::include_proto!("v1");
    }
    /// `v1alpha1.DRAResourceHealth`.
    pub mod v1alpha1 {
        tonic::include_proto!("v1alpha1");
    }
}

/// A version of the kubelet's `DRAResourceHealth` service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthApiVersion {
    /// `v1.DRAResourceHealth`.
    V1,
    /// `v1alpha1.DRAResourceHealth`.
    V1alpha1,
}

impl HealthApiVersion {
    /// Both versions, in the kubelet's order of preference.
    pub const ALL: [HealthApiVersion; 2] = [HealthApiVersion::V1, HealthApiVersion::V1alpha1];

    /// The name a plugin advertises in `PluginInfo.supported_versions`.
    pub fn service_name(self) -> &'static str {
        match self {
            HealthApiVersion::V1 => "v1.DRAResourceHealth",
            HealthApiVersion::V1alpha1 => "v1alpha1.DRAResourceHealth",
        }
    }

    /// The health service a kubelet picks from a registration's supported services.
    pub fn pick(supported: &[String]) -> Option<HealthApiVersion> {
        Self::ALL
            .into_iter()
            .find(|v| supported.iter().any(|s| s == v.service_name()))
    }
}

/// A device's health as the kubelet decodes it (either version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedHealth {
    /// `device.pool_name`.
    pub pool_name: String,
    /// `device.device_name`.
    pub device_name: String,
    /// `health`, decoded.
    pub health: WireHealthStatus,
    /// `last_updated_time`, Unix seconds.
    pub last_updated_time: i64,
    /// `health_check_timeout_seconds`.
    pub health_check_timeout_seconds: i64,
    /// `message`.
    pub message: String,
}

/// The `HealthStatus` enum on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireHealthStatus {
    /// `UNKNOWN` (0).
    Unknown,
    /// `HEALTHY` (1).
    Healthy,
    /// `UNHEALTHY` (2).
    Unhealthy,
    /// A number the official enum does not have.
    Other(i32),
}

impl WireHealthStatus {
    fn from_number(n: i32) -> Self {
        match n {
            0 => WireHealthStatus::Unknown,
            1 => WireHealthStatus::Healthy,
            2 => WireHealthStatus::Unhealthy,
            other => WireHealthStatus::Other(other),
        }
    }
}

/// One `NodeWatchResourcesResponse`, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// The devices it covers.
    pub devices: Vec<ReportedHealth>,
}

impl HealthReport {
    /// The report's entry for `device_name`.
    pub fn device(&self, device_name: &str) -> Option<&ReportedHealth> {
        self.devices.iter().find(|d| d.device_name == device_name)
    }
}

macro_rules! decode_report {
    ($response:expr) => {
        HealthReport {
            devices: $response
                .devices
                .into_iter()
                .map(|d| {
                    let device = d.device.unwrap_or_default();
                    ReportedHealth {
                        pool_name: device.pool_name,
                        device_name: device.device_name,
                        health: WireHealthStatus::from_number(d.health),
                        last_updated_time: d.last_updated_time,
                        health_check_timeout_seconds: d.health_check_timeout_seconds,
                        message: d.message,
                    }
                })
                .collect(),
        }
    };
}

/// An open `NodeWatchResources` stream of either version.
#[derive(Debug)]
pub enum HealthStream {
    /// On `v1.DRAResourceHealth`.
    V1(tonic::Streaming<health_proto::v1::NodeWatchResourcesResponse>),
    /// On `v1alpha1.DRAResourceHealth`.
    V1alpha1(tonic::Streaming<health_proto::v1alpha1::NodeWatchResourcesResponse>),
}

impl HealthStream {
    /// The next report; `Ok(None)` when the plugin ended the stream.
    pub async fn message(&mut self) -> Result<Option<HealthReport>, tonic::Status> {
        Ok(match self {
            HealthStream::V1(stream) => stream.message().await?.map(|r| decode_report!(r)),
            HealthStream::V1alpha1(stream) => stream.message().await?.map(|r| decode_report!(r)),
        })
    }

    /// The version this stream speaks.
    pub fn version(&self) -> HealthApiVersion {
        match self {
            HealthStream::V1(_) => HealthApiVersion::V1,
            HealthStream::V1alpha1(_) => HealthApiVersion::V1alpha1,
        }
    }

    /// Waits (at most `timeout`) for a report in which `done` holds for the entry of
    /// `device_name`, skipping reports where it does not; returns that entry.
    pub async fn wait_for_device(
        &mut self,
        device_name: &str,
        timeout: Duration,
        mut done: impl FnMut(&ReportedHealth) -> bool,
    ) -> anyhow::Result<ReportedHealth> {
        let mut last = None;
        let found = tokio::time::timeout(timeout, async {
            loop {
                let Some(report) = self.message().await? else {
                    bail!("the health stream ended");
                };
                if let Some(entry) = report.device(device_name) {
                    if done(entry) {
                        return Ok(entry.clone());
                    }
                    last = Some(entry.clone());
                }
            }
        })
        .await;
        match found {
            Ok(result) => result,
            Err(_) => bail!(
                "no health report for {device_name} matched within {timeout:?}; last seen: \
                 {last:?}"
            ),
        }
    }
}

/// Connects a gRPC channel to a unix socket. The URI is a placeholder: the connector
/// ignores it and dials `path`.
pub async fn connect_unix(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_path_buf();
    let dial = path.clone();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let dial = dial.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(dial).await?)) }
        }))
        .await
        .with_context(|| format!("connecting to {}", path.display()))
}

/// Plays the kubelet's part for the plugins in one registration directory.
#[derive(Debug)]
pub struct KubeletStandIn {
    registrar_dir: PathBuf,
    /// Sockets already handed out, by (path, inode): a plugin restarted on the same path
    /// is a new socket with a new inode, and is registered again.
    handled: Mutex<HashSet<(PathBuf, u64)>>,
    /// The last `GetInfo` failure per socket that has not answered since.
    probe_errors: Mutex<BTreeMap<PathBuf, String>>,
}

impl KubeletStandIn {
    /// A kubelet watching `registrar_dir` (it need not exist yet).
    pub fn new(registrar_dir: impl Into<PathBuf>) -> Self {
        Self {
            registrar_dir: registrar_dir.into(),
            handled: Mutex::new(HashSet::new()),
            probe_errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// The directory being watched.
    pub fn registrar_dir(&self) -> &Path {
        &self.registrar_dir
    }

    /// Waits for a new registration socket of `driver_name`, then registers it as the
    /// kubelet would (see [`PluginRegistration::accept`]).
    pub async fn wait_for_plugin(
        &self,
        driver_name: &str,
        timeout: Duration,
    ) -> anyhow::Result<DraClient> {
        self.discover(driver_name, timeout).await?.accept().await
    }

    /// Waits for a new registration socket whose `GetInfo` names `driver_name`, and stops
    /// there: the caller decides to [`PluginRegistration::accept`] or
    /// [`PluginRegistration::reject`] it.
    pub async fn discover(
        &self,
        driver_name: &str,
        timeout: Duration,
    ) -> anyhow::Result<PluginRegistration> {
        let found = tokio::time::timeout(timeout, self.poll_for(driver_name)).await;
        found.with_context(|| {
            let failures: Vec<String> = self
                .probe_errors()
                .iter()
                .map(|(socket, error)| format!("{}: {error}", socket.display()))
                .collect();
            let failures = if failures.is_empty() {
                String::new()
            } else {
                format!("; GetInfo failed on {}", failures.join("; "))
            };
            format!(
                "no plugin for driver {driver_name} registered in {} within {timeout:?}{failures}",
                self.registrar_dir.display()
            )
        })?
    }

    /// The last `GetInfo` failure of every socket that has not answered since, by socket.
    pub fn probe_errors(&self) -> BTreeMap<PathBuf, String> {
        self.probe_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn poll_for(&self, driver_name: &str) -> anyhow::Result<PluginRegistration> {
        loop {
            for (socket, inode) in self.new_sockets()? {
                // A socket that does not answer yet is retried on the next pass, as the
                // kubelet's reconciler retries failed registrations; its error is kept.
                let candidate = match PluginRegistration::probe(&socket).await {
                    Ok(candidate) => {
                        self.forget_probe_error(&socket);
                        candidate
                    }
                    Err(error) => {
                        self.probe_errors
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(socket, format!("{error:#}"));
                        continue;
                    }
                };
                if candidate.info.name == driver_name {
                    self.lock_handled().insert((socket, inode));
                    return Ok(candidate);
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Socket files in the directory not handed out yet.
    fn new_sockets(&self) -> anyhow::Result<Vec<(PathBuf, u64)>> {
        let entries = match std::fs::read_dir(&self.registrar_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", self.registrar_dir.display()));
            }
        };
        let handled = self.lock_handled();
        let mut sockets = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".sock") {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue; // removed since readdir
            };
            let key = (entry.path(), socket_identity(&meta));
            if meta.file_type().is_socket() && !handled.contains(&key) {
                sockets.push(key);
            }
        }
        Ok(sockets)
    }

    fn forget_probe_error(&self, socket: &Path) {
        self.probe_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(socket);
    }

    fn lock_handled(&self) -> std::sync::MutexGuard<'_, HashSet<(PathBuf, u64)>> {
        // A panic elsewhere while holding the lock leaves the set usable.
        self.handled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Tells a socket file from an earlier one at the same path. A restarted plugin removes
/// its socket and binds a new one, and the file system may hand the new file the old
/// inode number; the change time (to the nanosecond) still differs. The real kubelet sees
/// the re-creation as an fsnotify create event.
fn socket_identity(meta: &std::fs::Metadata) -> u64 {
    let ctime = (meta.ctime() as u64).wrapping_mul(1_000_000_000) ^ meta.ctime_nsec() as u64;
    meta.ino() ^ ctime.rotate_left(17)
}

/// A plugin found in the registration directory, between `GetInfo` and
/// `NotifyRegistrationStatus`.
#[derive(Debug)]
pub struct PluginRegistration {
    /// The registration socket.
    pub socket: PathBuf,
    /// What the plugin answered to `GetInfo`.
    pub info: PluginInfo,
    client: RegistrationClient<Channel>,
}

impl PluginRegistration {
    /// Connects to a registration socket and calls `GetInfo` with the kubelet's deadline.
    pub async fn probe(socket: &Path) -> anyhow::Result<Self> {
        let channel = connect_unix(socket).await?;
        let mut client = RegistrationClient::new(channel);
        let mut request = tonic::Request::new(InfoRequest {});
        request.set_timeout(GET_INFO_TIMEOUT);
        let info = tokio::time::timeout(GET_INFO_TIMEOUT, client.get_info(request))
            .await
            .with_context(|| format!("GetInfo on {} exceeded 1 s", socket.display()))?
            .with_context(|| format!("GetInfo on {}", socket.display()))?
            .into_inner();
        Ok(Self {
            socket: socket.to_path_buf(),
            info,
            client,
        })
    }

    /// Validates the plugin as the kubelet's DRA handler does, connects to its endpoint and
    /// reports `plugin_registered = true`. On a validation or connection failure it reports
    /// `plugin_registered = false` with the reason, and returns that reason as the error.
    pub async fn accept(mut self) -> anyhow::Result<DraClient> {
        let outcome = self.validate_and_connect().await;
        let status = match &outcome {
            Ok(_) => RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            },
            Err(e) => RegistrationStatus {
                plugin_registered: false,
                error: format!("{e:#}"),
            },
        };
        self.notify(status).await?;
        outcome
    }

    /// Reports `plugin_registered = false` with `reason`, as the kubelet does when it
    /// refuses a plugin.
    pub async fn reject(mut self, reason: &str) -> anyhow::Result<()> {
        self.notify(RegistrationStatus {
            plugin_registered: false,
            error: reason.to_string(),
        })
        .await
    }

    async fn notify(&mut self, status: RegistrationStatus) -> anyhow::Result<()> {
        self.client
            .notify_registration_status(status)
            .await
            .with_context(|| format!("NotifyRegistrationStatus on {}", self.socket.display()))?;
        Ok(())
    }

    async fn validate_and_connect(&self) -> anyhow::Result<DraClient> {
        let info = &self.info;
        if info.r#type != kubeletplugin::DRA_PLUGIN_TYPE {
            bail!("plugin type {:?} is not DRAPlugin", info.r#type);
        }
        let version = DraApiVersion::ALL
            .into_iter()
            .find(|v| {
                info.supported_versions
                    .iter()
                    .any(|s| s == v.service_name())
            })
            .with_context(|| {
                format!(
                    "none of the supported versions {:?} is a DRA service this kubelet knows",
                    info.supported_versions
                )
            })?;
        DraClient::connect(Path::new(&info.endpoint), info.clone(), version).await
    }
}

/// The outcome of one claim in a prepare call, in either API version's terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrepareOutcome {
    /// The prepared devices.
    pub devices: Vec<WireDevice>,
    /// The plugin's error for the claim; empty on success.
    pub error: String,
}

/// A prepared device as it came over the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireDevice {
    /// `request_names`.
    pub request_names: Vec<String>,
    /// `pool_name`.
    pub pool_name: String,
    /// `device_name`.
    pub device_name: String,
    /// `cdi_device_ids`.
    pub cdi_device_ids: Vec<String>,
    /// `share_id` (v1 only; always `None` from v1beta1, which has no such field).
    pub share_id: Option<String>,
}

/// The kubelet's connection to one plugin's DRA socket.
#[derive(Clone, Debug)]
pub struct DraClient {
    channel: Channel,
    endpoint: PathBuf,
    info: PluginInfo,
    version: DraApiVersion,
}

impl DraClient {
    /// Connects to the DRA socket at `endpoint`. `info` and `version` record what the
    /// registration said and which version the kubelet chose.
    pub async fn connect(
        endpoint: &Path,
        info: PluginInfo,
        version: DraApiVersion,
    ) -> anyhow::Result<Self> {
        let channel = connect_unix(endpoint).await?;
        Ok(Self {
            channel,
            endpoint: endpoint.to_path_buf(),
            info,
            version,
        })
    }

    /// The DRA socket.
    pub fn endpoint(&self) -> &Path {
        &self.endpoint
    }

    /// The plugin's `GetInfo` answer.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The version the kubelet chose at registration (the first it knows, in the plugin's
    /// order).
    pub fn negotiated_version(&self) -> DraApiVersion {
        self.version
    }

    /// A raw v1 client on the same connection.
    pub fn v1(&self) -> dra_v1::dra_plugin_client::DraPluginClient<Channel> {
        dra_v1::dra_plugin_client::DraPluginClient::new(self.channel.clone())
    }

    /// A raw v1beta1 client on the same connection.
    pub fn v1beta1(&self) -> dra_v1beta1::dra_plugin_client::DraPluginClient<Channel> {
        dra_v1beta1::dra_plugin_client::DraPluginClient::new(self.channel.clone())
    }

    /// `NodePrepareResources` in `version`, with the kubelet's timeout. An RPC error is an
    /// `Err` (the kubelet would then ignore the whole response).
    pub async fn prepare(
        &self,
        version: DraApiVersion,
        claims: &[ClaimRef],
    ) -> anyhow::Result<BTreeMap<String, PrepareOutcome>> {
        match version {
            DraApiVersion::V1 => {
                let request = dra_v1::NodePrepareResourcesRequest {
                    claims: claims.iter().map(v1_claim).collect(),
                };
                let response = with_deadline(
                    "NodePrepareResources",
                    self.v1().node_prepare_resources(kubelet_request(request)),
                )
                .await?;
                check_answered("NodePrepareResources", claims, &response.claims)?;
                Ok(response
                    .claims
                    .into_iter()
                    .map(|(uid, claim)| (uid, outcome_v1(claim)))
                    .collect())
            }
            DraApiVersion::V1beta1 => {
                let request = dra_v1beta1::NodePrepareResourcesRequest {
                    claims: claims.iter().map(v1beta1_claim).collect(),
                };
                let response = with_deadline(
                    "NodePrepareResources",
                    self.v1beta1()
                        .node_prepare_resources(kubelet_request(request)),
                )
                .await?;
                check_answered("NodePrepareResources", claims, &response.claims)?;
                Ok(response
                    .claims
                    .into_iter()
                    .map(|(uid, claim)| (uid, outcome_v1beta1(claim)))
                    .collect())
            }
        }
    }

    /// `NodeUnprepareResources` in `version`, with the kubelet's timeout; per claim UID, the
    /// plugin's error (empty on success).
    pub async fn unprepare(
        &self,
        version: DraApiVersion,
        claims: &[ClaimRef],
    ) -> anyhow::Result<BTreeMap<String, String>> {
        match version {
            DraApiVersion::V1 => {
                let request = dra_v1::NodeUnprepareResourcesRequest {
                    claims: claims.iter().map(v1_claim).collect(),
                };
                let response = with_deadline(
                    "NodeUnprepareResources",
                    self.v1().node_unprepare_resources(kubelet_request(request)),
                )
                .await?;
                check_answered("NodeUnprepareResources", claims, &response.claims)?;
                Ok(response
                    .claims
                    .into_iter()
                    .map(|(uid, c)| (uid, c.error))
                    .collect())
            }
            DraApiVersion::V1beta1 => {
                let request = dra_v1beta1::NodeUnprepareResourcesRequest {
                    claims: claims.iter().map(v1beta1_claim).collect(),
                };
                let response = with_deadline(
                    "NodeUnprepareResources",
                    self.v1beta1()
                        .node_unprepare_resources(kubelet_request(request)),
                )
                .await?;
                check_answered("NodeUnprepareResources", claims, &response.claims)?;
                Ok(response
                    .claims
                    .into_iter()
                    .map(|(uid, c)| (uid, c.error))
                    .collect())
            }
        }
    }

    /// The health service the kubelet picked from the registration (see
    /// [`HealthApiVersion::pick`]); `None`: the plugin advertises none.
    pub fn health_version(&self) -> Option<HealthApiVersion> {
        HealthApiVersion::pick(&self.info.supported_versions)
    }

    /// Opens `NodeWatchResources` on the health service the kubelet picked.
    ///
    /// # Errors
    /// When the plugin advertises no health service (the kubelet would not watch), or the
    /// call fails (a `tonic::Status` in the chain).
    pub async fn watch_health(&self) -> anyhow::Result<HealthStream> {
        let version = self.health_version().with_context(|| {
            format!(
                "the plugin advertises no DRAResourceHealth service in {:?}",
                self.info.supported_versions
            )
        })?;
        self.watch_health_version(version).await
    }

    /// Opens `NodeWatchResources` of `version` whatever the registration said (the 1.34
    /// kubelet opened v1alpha1 on every plugin).
    pub async fn watch_health_version(
        &self,
        version: HealthApiVersion,
    ) -> anyhow::Result<HealthStream> {
        use health_proto::{v1, v1alpha1};
        let stream = match version {
            HealthApiVersion::V1 => {
                let mut client = v1::dra_resource_health_client::DraResourceHealthClient::new(
                    self.channel.clone(),
                );
                let stream = client
                    .node_watch_resources(v1::NodeWatchResourcesRequest {})
                    .await
                    .context("v1.DRAResourceHealth/NodeWatchResources")?;
                HealthStream::V1(stream.into_inner())
            }
            HealthApiVersion::V1alpha1 => {
                let mut client = v1alpha1::dra_resource_health_client::DraResourceHealthClient::new(
                    self.channel.clone(),
                );
                let stream = client
                    .node_watch_resources(v1alpha1::NodeWatchResourcesRequest {})
                    .await
                    .context("v1alpha1.DRAResourceHealth/NodeWatchResources")?;
                HealthStream::V1alpha1(stream.into_inner())
            }
        };
        Ok(stream)
    }
}

/// The kubelet's checks of a response's claim map (`manager.go`): no result for a claim it
/// did not ask for, and a result for every claim it asked for.
fn check_answered<T>(
    call: &str,
    asked: &[ClaimRef],
    answered: &HashMap<String, T>,
) -> anyhow::Result<()> {
    if let Some(unknown) = answered
        .keys()
        .find(|uid| !asked.iter().any(|claim| &claim.uid == *uid))
    {
        bail!("{call} returned result for unknown claim UID {unknown}");
    }
    let unfinished = asked.len().saturating_sub(answered.len());
    if unfinished != 0 {
        bail!("{call} skipped {unfinished} ResourceClaims");
    }
    Ok(())
}

/// A request carrying the kubelet's per-call deadline (sent as `grpc-timeout`).
fn kubelet_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(DRA_CALL_TIMEOUT);
    request
}

/// Enforces the kubelet's per-call timeout on the client side too.
async fn with_deadline<T>(
    call: &str,
    response: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    let response = tokio::time::timeout(DRA_CALL_TIMEOUT, response)
        .await
        .with_context(|| format!("{call} exceeded the kubelet's {DRA_CALL_TIMEOUT:?}"))?
        .with_context(|| format!("{call} failed"))?;
    Ok(response.into_inner())
}

fn v1_claim(claim: &ClaimRef) -> dra_v1::Claim {
    dra_v1::Claim {
        namespace: claim.namespace.clone(),
        uid: claim.uid.clone(),
        name: claim.name.clone(),
    }
}

fn v1beta1_claim(claim: &ClaimRef) -> dra_v1beta1::Claim {
    dra_v1beta1::Claim {
        namespace: claim.namespace.clone(),
        uid: claim.uid.clone(),
        name: claim.name.clone(),
    }
}

fn outcome_v1(claim: dra_v1::NodePrepareResourceResponse) -> PrepareOutcome {
    PrepareOutcome {
        devices: claim
            .devices
            .into_iter()
            .map(|d| WireDevice {
                request_names: d.request_names,
                pool_name: d.pool_name,
                device_name: d.device_name,
                cdi_device_ids: d.cdi_device_ids,
                share_id: d.share_id,
            })
            .collect(),
        error: claim.error,
    }
}

fn outcome_v1beta1(claim: dra_v1beta1::NodePrepareResourceResponse) -> PrepareOutcome {
    PrepareOutcome {
        devices: claim
            .devices
            .into_iter()
            .map(|d| WireDevice {
                request_names: d.request_names,
                pool_name: d.pool_name,
                device_name: d.device_name,
                cdi_device_ids: d.cdi_device_ids,
                share_id: None,
            })
            .collect(),
        error: claim.error,
    }
}
