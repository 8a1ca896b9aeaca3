//! The kubelet's plugin-watcher handshake (`pluginregistration.Registration`).

use tokio::sync::watch;

use crate::proto::registration as pb;

/// The plugin type the kubelet expects from DRA drivers.
pub const DRA_PLUGIN_TYPE: &str = "DRAPlugin";
/// The DRA services this library serves, most preferred first, as advertised in
/// `PluginInfo.supported_versions`.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["v1.DRAPlugin", "v1beta1.DRAPlugin"];
/// The device health services, advertised after [`SUPPORTED_VERSIONS`] when the plugin
/// serves health ([`crate::PluginBuilder::health`]). The kubelet finds optional services in
/// the same list (`<gRPC package>.<service>`) and picks the newest it knows.
pub const HEALTH_SERVICES: [&str; 2] = ["v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"];

/// What the kubelet reported in `NotifyRegistrationStatus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationStatus {
    /// Whether the kubelet accepted the plugin.
    pub registered: bool,
    /// The kubelet's reason when it did not (empty strings become `None`).
    pub error: Option<String>,
}

/// The gRPC service behind the registration socket.
pub(crate) struct RegistrationService {
    pub driver_name: String,
    /// The DRA socket's path, as the kubelet should dial it.
    pub endpoint: String,
    /// `PluginInfo.supported_versions`: the services served on the DRA socket.
    pub supported_versions: Vec<String>,
    pub status: watch::Sender<Option<RegistrationStatus>>,
}

#[tonic::async_trait]
impl pb::registration_server::Registration for RegistrationService {
    async fn get_info(
        &self,
        _request: tonic::Request<pb::InfoRequest>,
    ) -> Result<tonic::Response<pb::PluginInfo>, tonic::Status> {
        Ok(tonic::Response::new(pb::PluginInfo {
            r#type: DRA_PLUGIN_TYPE.to_string(),
            name: self.driver_name.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: self.supported_versions.clone(),
        }))
    }

    async fn notify_registration_status(
        &self,
        request: tonic::Request<pb::RegistrationStatus>,
    ) -> Result<tonic::Response<pb::RegistrationStatusResponse>, tonic::Status> {
        let reported = request.into_inner();
        let status = RegistrationStatus {
            registered: reported.plugin_registered,
            error: Some(reported.error).filter(|e| !e.is_empty()),
        };
        if status.registered {
            tracing::info!(driver = %self.driver_name, "kubelet registered the plugin");
        } else {
            tracing::error!(
                driver = %self.driver_name,
                error = status.error.as_deref().unwrap_or("(no reason given)"),
                "kubelet rejected the plugin"
            );
        }
        self.status.send_replace(Some(status));
        Ok(tonic::Response::new(pb::RegistrationStatusResponse {}))
    }
}
