//! Starting and stopping a kubelet plugin: [`Plugin::builder`], [`PluginBuilder::start`],
//! [`PluginHandle::shutdown`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::dra::{DraCore, DraV1, DraV1beta1};
use crate::driver::DraDriver;
use crate::error::Error;
use crate::health::{HealthReporter, HealthService};
use crate::proto::{dra_v1, dra_v1beta1, registration};
use crate::registration::{
    HEALTH_SERVICES, RegistrationService, RegistrationStatus, SUPPORTED_VERSIONS,
};
use crate::sockets::{self, SocketLayout};

/// The kubelet's default plugin registration directory.
pub const DEFAULT_REGISTRAR_DIR: &str = "/var/lib/kubelet/plugins_registry";
/// The kubelet's default parent directory of plugin data directories.
pub const DEFAULT_PLUGINS_DIR: &str = "/var/lib/kubelet/plugins";

/// A DRA kubelet plugin: the entry point of this library.
///
/// [`Plugin::builder`] names the driver and the node; [`PluginBuilder::start`] creates the
/// sockets and serves:
/// - `pluginregistration.Registration` on `<registrar dir>/<driver>-reg.sock`, which the
///   kubelet's plugin watcher finds and calls;
/// - `DRAPlugin` v1 and v1beta1 (and optionally `DRAResourceHealth` v1 and v1alpha1) on
///   `<plugin data dir>/dra.sock`, which the kubelet dials for every prepare and unprepare.
///
/// # Example
///
/// ```no_run
/// use std::collections::BTreeMap;
/// use std::sync::Arc;
///
/// use k8s_openapi::api::resource::v1::ResourceClaim;
/// use kubeletplugin::{ClaimError, ClaimRef, DraDriver, Plugin, PrepareResult};
///
/// /// Prepares every claim with no devices and releases nothing.
/// struct NoOp;
///
/// impl DraDriver for NoOp {
///     async fn prepare(&self, claims: Vec<ResourceClaim>) -> BTreeMap<String, PrepareResult> {
///         claims
///             .into_iter()
///             .filter_map(|claim| claim.metadata.uid)
///             .map(|uid| (uid, Ok(Vec::new())))
///             .collect()
///     }
///
///     async fn unprepare(&self, claims: Vec<ClaimRef>) -> BTreeMap<String, Result<(), ClaimError>> {
///         claims.into_iter().map(|claim| (claim.uid, Ok(()))).collect()
///     }
/// }
///
/// # async fn run() -> anyhow::Result<()> {
/// let client = kube::Client::try_default().await?;
/// let plugin = Plugin::builder("example.dev", "node-1")
///     .kube_client(client)
///     .start(Arc::new(NoOp))
///     .await?;
/// tokio::signal::ctrl_c().await?;
/// plugin.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Plugin {
    _private: (),
}

impl Plugin {
    /// A builder for the plugin of `driver_name` (a DNS subdomain such as `netclaim.dev`) on
    /// the node `node_name`.
    pub fn builder(driver_name: impl Into<String>, node_name: impl Into<String>) -> PluginBuilder {
        PluginBuilder {
            driver_name: driver_name.into(),
            node_name: node_name.into(),
            kube_client: None,
            registrar_dir: PathBuf::from(DEFAULT_REGISTRAR_DIR),
            plugin_data_dir: None,
            rolling_update_uid: None,
            serialize: true,
            health: None,
        }
    }
}

/// Configures and starts a [`Plugin`]. Every setting but the kube client has a default.
#[derive(Clone)]
#[must_use = "a builder does nothing until started"]
pub struct PluginBuilder {
    driver_name: String,
    node_name: String,
    kube_client: Option<kube::Client>,
    registrar_dir: PathBuf,
    plugin_data_dir: Option<PathBuf>,
    rolling_update_uid: Option<String>,
    serialize: bool,
    health: Option<HealthReporter>,
}

impl std::fmt::Debug for PluginBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginBuilder")
            .field("driver_name", &self.driver_name)
            .field("node_name", &self.node_name)
            .field("kube_client", &self.kube_client.is_some())
            .field("registrar_dir", &self.registrar_dir)
            .field("plugin_data_dir", &self.plugin_data_dir)
            .field("rolling_update_uid", &self.rolling_update_uid)
            .field("serialize", &self.serialize)
            .field("health", &self.health.is_some())
            .finish()
    }
}

impl PluginBuilder {
    /// The client used to fetch ResourceClaims for `NodePrepareResources`. Required.
    pub fn kube_client(mut self, client: kube::Client) -> Self {
        self.kube_client = Some(client);
        self
    }

    /// The kubelet's plugin registration directory (default
    /// [`DEFAULT_REGISTRAR_DIR`]).
    pub fn registrar_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.registrar_dir = dir.into();
        self
    }

    /// The driver's own directory, holding the DRA socket (default
    /// `/var/lib/kubelet/plugins/<driver name>`). The driver may keep its state there too.
    pub fn plugin_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_data_dir = Some(dir.into());
        self
    }

    /// With the UID of the plugin's pod, names the sockets `<driver>-<uid>-reg.sock` and
    /// `dra-<uid>.sock`, so that during a DaemonSet rolling update the old and the new pod
    /// serve side by side and the kubelet moves to the new one without a gap. `None` (the
    /// default) uses the fixed names.
    pub fn rolling_update(mut self, pod_uid: Option<String>) -> Self {
        self.rolling_update_uid = pod_uid;
        self
    }

    /// Whether driver calls are serialized (default `true`): at most one `prepare` or
    /// `unprepare` runs at a time. Claims are still fetched concurrently. Turn it off only
    /// when the driver guards its own state.
    pub fn serialize(mut self, serialize: bool) -> Self {
        self.serialize = serialize;
        self
    }

    /// Serves `DRAResourceHealth` (`v1` and `v1alpha1`) on the DRA socket and advertises
    /// both in the registration ([`crate::HEALTH_SERVICES`]), streaming what the driver
    /// reports through `reporter`. Without it, neither is advertised and the health calls
    /// of a kubelet that tries anyway get `Unimplemented`, which it treats as "no health
    /// information".
    pub fn health(mut self, reporter: HealthReporter) -> Self {
        self.health = Some(reporter);
        self
    }

    /// Creates the directories, removes stale sockets, and starts serving: the DRA socket
    /// first, then the registration socket, so the kubelet never finds a plugin whose
    /// service is not there yet.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a missing kube client, a malformed driver name, node
    /// name or pod UID, or socket paths too long for a unix socket; [`Error::Io`] when a
    /// directory or socket cannot be created.
    pub async fn start<D: DraDriver>(self, driver: Arc<D>) -> Result<PluginHandle, Error> {
        let settings = self.validate()?;
        let layout = SocketLayout::new(
            &settings.driver_name,
            settings.registrar_dir.clone(),
            settings.plugin_data_dir.clone(),
            settings.rolling_update_uid.as_deref(),
        )?;
        let endpoint = layout
            .dra_socket
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "DRA socket path {} is not valid UTF-8",
                    layout.dra_socket.display()
                ))
            })?;
        layout.prepare()?;

        let shutdown = CancellationToken::new();
        let (status_tx, status_rx) = watch::channel(None);
        let mut servers = Vec::new();

        let core = Arc::new(DraCore::new(driver, settings.client, settings.serialize));
        let serves_health = settings.health.is_some();
        let dra_routes = dra_routes(core, settings.health, shutdown.clone());
        let dra_listener = sockets::bind(&layout.dra_socket)?;
        servers.push(serve(
            dra_routes,
            dra_listener,
            layout.dra_socket.clone(),
            shutdown.clone(),
        ));

        let registration = RegistrationService {
            driver_name: settings.driver_name.clone(),
            endpoint,
            supported_versions: supported_versions(serves_health),
            status: status_tx,
        };
        let registration_routes = Routes::new(
            registration::registration_server::RegistrationServer::new(registration),
        );
        let registration_listener = match sockets::bind(&layout.registration_socket) {
            Ok(listener) => listener,
            Err(e) => {
                shutdown.cancel();
                let _ = layout.remove();
                return Err(e);
            }
        };
        servers.push(serve(
            registration_routes,
            registration_listener,
            layout.registration_socket.clone(),
            shutdown.clone(),
        ));

        tracing::info!(
            driver = %settings.driver_name,
            node = %settings.node_name,
            registration = %layout.registration_socket.display(),
            dra = %layout.dra_socket.display(),
            "kubelet plugin serving"
        );
        Ok(PluginHandle {
            driver_name: settings.driver_name,
            node_name: settings.node_name,
            layout,
            status: status_rx,
            shutdown,
            servers,
            finished: false,
        })
    }

    fn validate(self) -> Result<Settings, Error> {
        check_driver_name(&self.driver_name)?;
        if self.node_name.is_empty() {
            return Err(Error::InvalidConfig("node name is empty".into()));
        }
        if let Some(uid) = &self.rolling_update_uid {
            check_pod_uid(uid)?;
        }
        let client = self.kube_client.ok_or_else(|| {
            Error::InvalidConfig(
                "no kube client: the plugin needs one to fetch ResourceClaims in \
                 NodePrepareResources"
                    .into(),
            )
        })?;
        let plugin_data_dir = self
            .plugin_data_dir
            .unwrap_or_else(|| Path::new(DEFAULT_PLUGINS_DIR).join(&self.driver_name));
        Ok(Settings {
            driver_name: self.driver_name,
            node_name: self.node_name,
            client,
            registrar_dir: self.registrar_dir,
            plugin_data_dir,
            rolling_update_uid: self.rolling_update_uid,
            serialize: self.serialize,
            health: self.health,
        })
    }
}

/// A builder's settings, checked.
struct Settings {
    driver_name: String,
    node_name: String,
    client: kube::Client,
    registrar_dir: PathBuf,
    plugin_data_dir: PathBuf,
    rolling_update_uid: Option<String>,
    serialize: bool,
    health: Option<HealthReporter>,
}

/// A driver name becomes a file name and the kubelet's key for the driver: it must be a
/// DNS subdomain (lower-case alphanumerics, '-' and '.', at most 63 characters here, as
/// ResourceSlice's `spec.driver` requires).
fn check_driver_name(name: &str) -> Result<(), Error> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let valid_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > 63 || !valid_chars || !valid_ends {
        return Err(Error::InvalidConfig(format!(
            "driver name {name:?} is not a DNS subdomain of at most 63 characters"
        )));
    }
    Ok(())
}

/// A pod UID becomes part of socket file names: only a UUID's characters are allowed.
fn check_pod_uid(uid: &str) -> Result<(), Error> {
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(Error::InvalidConfig(format!(
            "rolling-update pod UID {uid:?} must be non-empty and contain only \
             alphanumerics and '-'"
        )));
    }
    Ok(())
}

/// The services of the DRA socket.
fn dra_routes<D: DraDriver>(
    core: Arc<DraCore<D>>,
    health: Option<HealthReporter>,
    shutdown: CancellationToken,
) -> Routes {
    let mut routes = Routes::new(dra_v1::dra_plugin_server::DraPluginServer::from_arc(
        Arc::new(DraV1(core.clone())),
    ))
    .add_service(dra_v1beta1::dra_plugin_server::DraPluginServer::from_arc(
        Arc::new(DraV1beta1(core)),
    ));
    if let Some(reporter) = health {
        let health = HealthService { reporter, shutdown };
        routes = routes
            .add_service(health.v1())
            .add_service(health.v1alpha1());
    }
    routes
}

/// What the registration advertises: the DRA services, then the health services when the
/// plugin serves them.
fn supported_versions(serves_health: bool) -> Vec<String> {
    let health = serves_health.then_some(HEALTH_SERVICES.as_slice());
    SUPPORTED_VERSIONS
        .iter()
        .chain(health.into_iter().flatten())
        .map(|service| service.to_string())
        .collect()
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then lets in-flight calls
/// finish.
fn serve(
    routes: Routes,
    listener: UnixListener,
    path: PathBuf,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), Error>> {
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await
            .map_err(|source| Error::Serve { path, source })
    })
}

/// A running plugin. Stop it with [`PluginHandle::shutdown`]; dropping it stops serving at
/// once and removes the sockets without waiting for in-flight calls.
#[derive(Debug)]
pub struct PluginHandle {
    driver_name: String,
    node_name: String,
    layout: SocketLayout,
    status: watch::Receiver<Option<RegistrationStatus>>,
    shutdown: CancellationToken,
    servers: Vec<JoinHandle<Result<(), Error>>>,
    /// Set by `shutdown`, so that `Drop` does not remove sockets that a newer instance with
    /// the same paths may have created since.
    finished: bool,
}

impl PluginHandle {
    /// The latest `NotifyRegistrationStatus` from the kubelet: `None` until the kubelet has
    /// called it. `changed()` on the receiver waits for the next report.
    pub fn registration_status(&self) -> watch::Receiver<Option<RegistrationStatus>> {
        self.status.clone()
    }

    /// The DRA service socket, as advertised to the kubelet.
    pub fn dra_socket_path(&self) -> &Path {
        &self.layout.dra_socket
    }

    /// The registration socket in the kubelet's registrar directory.
    pub fn registration_socket_path(&self) -> &Path {
        &self.layout.registration_socket
    }

    /// The driver's own directory (it holds the DRA socket; the driver may keep state here).
    pub fn plugin_data_dir(&self) -> &Path {
        &self.layout.plugin_data_dir
    }

    /// The driver name the plugin registered.
    pub fn driver_name(&self) -> &str {
        &self.driver_name
    }

    /// The node the plugin serves.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Stops gracefully: removes the sockets (registration first, so the kubelet stops
    /// sending calls), stops accepting connections, and waits for in-flight calls to
    /// finish. Health streams end.
    ///
    /// # Errors
    /// The first error of removing a socket or of a server that had failed while serving.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.finished = true;
        let removed = self.layout.remove();
        self.shutdown.cancel();
        let mut result = removed;
        for server in std::mem::take(&mut self.servers) {
            let served = match server.await {
                Ok(served) => served,
                Err(join_error) => Err(Error::InvalidConfig(format!(
                    "gRPC server task ended abnormally: {join_error}"
                ))),
            };
            result = result.and(served);
        }
        tracing::info!(driver = %self.driver_name, "kubelet plugin stopped");
        result
    }
}

impl Drop for PluginHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.finished {
            return;
        }
        if let Err(e) = self.layout.remove() {
            tracing::warn!(error = %e, "removing kubelet plugin sockets on drop");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_calls_are_serialized_unless_turned_off() {
        // What `start` hands to the DRA core (whose tests show what serializing does).
        assert!(Plugin::builder("netclaim.dev", "node").serialize);
        assert!(
            !Plugin::builder("netclaim.dev", "node")
                .serialize(false)
                .serialize
        );
    }

    #[test]
    fn health_services_are_advertised_only_when_served() {
        assert_eq!(
            supported_versions(false),
            ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
        );
        assert_eq!(
            supported_versions(true),
            [
                "v1.DRAPlugin",
                "v1beta1.DRAPlugin",
                "v1.DRAResourceHealth",
                "v1alpha1.DRAResourceHealth"
            ]
        );
    }

    #[test]
    fn driver_names_must_be_dns_subdomains() {
        assert!(check_driver_name("netclaim.dev").is_ok());
        for bad in ["", "Netclaim.dev", "a/b", "-a", "a.", &"a".repeat(64)] {
            assert!(check_driver_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pod_uids_may_not_escape_file_names() {
        assert!(check_pod_uid("0f1e2d3c-aaaa-bbbb-cccc-0123456789ab").is_ok());
        for bad in ["", "../x", "a/b", "a b"] {
            assert!(check_pod_uid(bad).is_err(), "{bad:?} accepted");
        }
    }
}
