//! A minimal CRI client (`runtime.v1`): what a kubelet does to a runtime for pod sandboxes
//! and (for the CDI tests) their containers, over containerd's unix socket.
//!
//! The protocol subset is `test/proto/cri_runtime_v1.proto`; see there for what is left out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated `runtime.v1` messages and clients.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("runtime.v1");
}

use proto::image_service_client::ImageServiceClient;
use proto::runtime_service_client::RuntimeServiceClient;

/// The pod a test asks the runtime to run: the fields of a kubelet's `PodSandboxConfig` that
/// matter to netclaim.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Pod name (metadata.name); also the sandbox's hostname.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID, which netclaim matches against claims' `status.reservedFor`.
    pub uid: String,
    /// Pod annotations, passed through to NRI.
    pub annotations: HashMap<String, String>,
    /// `hostNetwork: true`: the sandbox shares the node's netns (CRI `NamespaceMode::Node`).
    pub host_network: bool,
    /// The sandbox attempt (`metadata.attempt`): the kubelet creates a new sandbox for the
    /// same pod with the next attempt when the last one died; 0 for the first.
    pub attempt: u32,
}

impl PodSpec {
    /// A pod in namespace `default` with a fresh random UID and its own network namespace.
    pub fn new(name: &str) -> Self {
        let uid: u128 = rand::random();
        let hex = format!("{uid:032x}");
        Self {
            name: name.to_string(),
            namespace: "default".to_string(),
            uid: format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            ),
            annotations: HashMap::new(),
            host_network: false,
            attempt: 0,
        }
    }
}

/// A CRI client on one containerd socket.
#[derive(Debug, Clone)]
pub struct CriClient {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    log_root: PathBuf,
    cgroup_parent: String,
}

/// Opens a gRPC channel over the unix socket at `socket`.
pub async fn unix_channel(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    // The URI is required by tonic but unused: the connector ignores it.
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .with_context(|| format!("connecting to {}", socket.display()))
}

impl CriClient {
    /// Connects to the CRI on `socket`; pods' log directories go under `log_root`, and their
    /// cgroups under `cgroup_parent` (empty: containerd's default, `/k8s.io`).
    pub async fn connect(socket: &Path, log_root: &Path, cgroup_parent: &str) -> Result<Self> {
        let channel = unix_channel(socket).await?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            log_root: log_root.to_path_buf(),
            cgroup_parent: cgroup_parent.to_string(),
        })
    }

    /// The raw `RuntimeService` client, for calls the helpers do not cover.
    pub fn runtime(&mut self) -> &mut RuntimeServiceClient<Channel> {
        &mut self.runtime
    }

    /// The runtime's name and version (`Version`).
    pub async fn version(&mut self) -> Result<proto::VersionResponse> {
        let request = proto::VersionRequest {
            version: "v1".to_string(),
        };
        Ok(self.runtime.version(request).await?.into_inner())
    }

    /// The runtime's conditions (`Status`), e.g. `RuntimeReady` and `NetworkReady`.
    pub async fn conditions(&mut self) -> Result<Vec<proto::RuntimeCondition>> {
        let response = self
            .runtime
            .status(proto::StatusRequest { verbose: false })
            .await?
            .into_inner();
        Ok(response.status.map(|s| s.conditions).unwrap_or_default())
    }

    /// Whether the runtime has `image` (`ImageStatus`).
    pub async fn has_image(&mut self, image: &str) -> Result<bool> {
        let request = proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image: image.to_string(),
            }),
            verbose: false,
        };
        Ok(self
            .images
            .image_status(request)
            .await?
            .into_inner()
            .image
            .is_some())
    }

    /// The `PodSandboxConfig` a kubelet sends for `spec` (with RunPodSandbox, and again
    /// with each CreateContainer).
    pub fn sandbox_config(&self, spec: &PodSpec) -> proto::PodSandboxConfig {
        let log_directory = self
            .log_root
            .join(format!("{}_{}_{}", spec.namespace, spec.name, spec.uid));
        let network = if spec.host_network {
            proto::NamespaceMode::Node
        } else {
            proto::NamespaceMode::Pod
        };
        proto::PodSandboxConfig {
            metadata: Some(proto::PodSandboxMetadata {
                name: spec.name.clone(),
                uid: spec.uid.clone(),
                namespace: spec.namespace.clone(),
                attempt: spec.attempt,
            }),
            // As the kubelet does: a host-network pod shares the node's UTS namespace, where
            // runc refuses to set a hostname.
            hostname: if spec.host_network {
                String::new()
            } else {
                spec.name.clone()
            },
            log_directory: log_directory.display().to_string(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".to_string(), spec.name.clone()),
                (
                    "io.kubernetes.pod.namespace".to_string(),
                    spec.namespace.clone(),
                ),
                ("io.kubernetes.pod.uid".to_string(), spec.uid.clone()),
            ]),
            annotations: spec.annotations.clone(),
            linux: Some(proto::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(proto::LinuxSandboxSecurityContext {
                    namespace_options: Some(proto::NamespaceOption {
                        network: network as i32,
                        pid: proto::NamespaceMode::Pod as i32,
                        ipc: proto::NamespaceMode::Pod as i32,
                    }),
                }),
            }),
        }
    }

    /// Runs a pod sandbox as a kubelet would (attempt `spec.attempt`) and returns its
    /// sandbox ID.
    pub async fn run_pod(&mut self, spec: &PodSpec) -> Result<String> {
        let request = proto::RunPodSandboxRequest {
            config: Some(self.sandbox_config(spec)),
            runtime_handler: String::new(),
        };
        let response = self
            .runtime
            .run_pod_sandbox(request)
            .await
            .map_err(|status| anyhow!("RunPodSandbox {}: {}", spec.name, status.message()))?;
        Ok(response.into_inner().pod_sandbox_id)
    }

    /// Stops a pod sandbox (its netns is torn down; the sandbox stays listed).
    pub async fn stop_pod(&mut self, sandbox_id: &str) -> Result<()> {
        let request = proto::StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        self.runtime
            .stop_pod_sandbox(request)
            .await
            .map_err(|status| anyhow!("StopPodSandbox {sandbox_id}: {}", status.message()))?;
        Ok(())
    }

    /// Removes a (stopped) pod sandbox.
    pub async fn remove_pod(&mut self, sandbox_id: &str) -> Result<()> {
        let request = proto::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        self.runtime
            .remove_pod_sandbox(request)
            .await
            .map_err(|status| anyhow!("RemovePodSandbox {sandbox_id}: {}", status.message()))?;
        Ok(())
    }

    /// `PodSandboxStatus`, verbose (with containerd's `info` JSON).
    pub async fn pod_status(
        &mut self,
        sandbox_id: &str,
    ) -> Result<proto::PodSandboxStatusResponse> {
        let request = proto::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            verbose: true,
        };
        let response = self
            .runtime
            .pod_sandbox_status(request)
            .await
            .map_err(|status| anyhow!("PodSandboxStatus {sandbox_id}: {}", status.message()))?;
        Ok(response.into_inner())
    }

    /// The path of the pod's network namespace, from the OCI runtime spec containerd reports
    /// in the verbose status; `None` when the pod uses the node's network.
    pub async fn pod_netns_path(&mut self, sandbox_id: &str) -> Result<Option<PathBuf>> {
        let status = self.pod_status(sandbox_id).await?;
        let info = status
            .info
            .get("info")
            .ok_or_else(|| anyhow!("PodSandboxStatus {sandbox_id}: no verbose \"info\""))?;
        netns_path_from_info(info).with_context(|| format!("PodSandboxStatus {sandbox_id}"))
    }

    /// Creates container `name` in the sandbox of pod `spec` from `image` (its entrypoint),
    /// with the CDI devices `cdi_devices` (fully qualified ids, as the kubelet passes what a
    /// DRA driver's prepare returned); returns the container id.
    pub async fn create_container(
        &mut self,
        sandbox_id: &str,
        spec: &PodSpec,
        name: &str,
        image: &str,
        cdi_devices: &[String],
    ) -> Result<String> {
        let request = proto::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(proto::ContainerConfig {
                metadata: Some(proto::ContainerMetadata {
                    name: name.to_string(),
                    attempt: 0,
                }),
                image: Some(proto::ImageSpec {
                    image: image.to_string(),
                }),
                command: Vec::new(),
                args: Vec::new(),
                log_path: format!("{name}/0.log"),
                cdi_devices: cdi_devices
                    .iter()
                    .map(|id| proto::CdiDevice { name: id.clone() })
                    .collect(),
            }),
            sandbox_config: Some(self.sandbox_config(spec)),
        };
        let response = self
            .runtime
            .create_container(request)
            .await
            .map_err(|status| anyhow!("CreateContainer {name}: {}", status.message()))?;
        Ok(response.into_inner().container_id)
    }

    /// Starts a created container.
    pub async fn start_container(&mut self, container_id: &str) -> Result<()> {
        let request = proto::StartContainerRequest {
            container_id: container_id.to_string(),
        };
        self.runtime
            .start_container(request)
            .await
            .map_err(|status| anyhow!("StartContainer {container_id}: {}", status.message()))?;
        Ok(())
    }

    /// Stops a container (SIGTERM, then SIGKILL after `timeout_seconds`).
    pub async fn stop_container(&mut self, container_id: &str, timeout_seconds: i64) -> Result<()> {
        let request = proto::StopContainerRequest {
            container_id: container_id.to_string(),
            timeout: timeout_seconds,
        };
        self.runtime
            .stop_container(request)
            .await
            .map_err(|status| anyhow!("StopContainer {container_id}: {}", status.message()))?;
        Ok(())
    }

    /// Removes a container.
    pub async fn remove_container(&mut self, container_id: &str) -> Result<()> {
        let request = proto::RemoveContainerRequest {
            container_id: container_id.to_string(),
        };
        self.runtime
            .remove_container(request)
            .await
            .map_err(|status| anyhow!("RemoveContainer {container_id}: {}", status.message()))?;
        Ok(())
    }

    /// `ContainerStatus`, verbose: the state, and containerd's `info` JSON (the container's
    /// pid and OCI runtime spec), parsed.
    pub async fn container_status(
        &mut self,
        container_id: &str,
    ) -> Result<(proto::ContainerStatus, serde_json::Value)> {
        let request = proto::ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose: true,
        };
        let response = self
            .runtime
            .container_status(request)
            .await
            .map_err(|status| anyhow!("ContainerStatus {container_id}: {}", status.message()))?
            .into_inner();
        let info = response
            .info
            .get("info")
            .ok_or_else(|| anyhow!("ContainerStatus {container_id}: no verbose \"info\""))?;
        let info: serde_json::Value = serde_json::from_str(info)
            .with_context(|| format!("ContainerStatus {container_id}: info is not JSON"))?;
        let status = response
            .status
            .ok_or_else(|| anyhow!("ContainerStatus {container_id}: no status"))?;
        Ok((status, info))
    }

    /// All pod sandboxes the runtime knows (`ListPodSandbox`, no filter).
    pub async fn list_pods(&mut self) -> Result<Vec<proto::PodSandbox>> {
        let response = self
            .runtime
            .list_pod_sandbox(proto::ListPodSandboxRequest { filter: None })
            .await
            .map_err(|status| anyhow!("ListPodSandbox: {}", status.message()))?;
        Ok(response.into_inner().items)
    }
}

/// Reads `runtimeSpec.linux.namespaces[type=network].path` from containerd's verbose sandbox
/// info; a network namespace entry without a path (or none) means the node's network.
pub fn netns_path_from_info(info: &str) -> Result<Option<PathBuf>> {
    let value: serde_json::Value =
        serde_json::from_str(info).context("verbose info is not JSON")?;
    let namespaces = value
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(|n| n.as_array())
        .ok_or_else(|| anyhow!("verbose info has no runtimeSpec.linux.namespaces"))?;
    let path = namespaces
        .iter()
        .find(|ns| ns.get("type").and_then(|t| t.as_str()) == Some("network"))
        .and_then(|ns| ns.get("path"))
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_path_is_read_from_the_runtime_spec() {
        let info = r#"{"pid":7,"runtimeSpec":{"linux":{"namespaces":[
            {"type":"pid"},{"type":"network","path":"/s/netns/cni-1"}]}}}"#;
        assert_eq!(
            netns_path_from_info(info).unwrap(),
            Some(PathBuf::from("/s/netns/cni-1"))
        );
        let host = r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"}]}}}"#;
        assert_eq!(netns_path_from_info(host).unwrap(), None);
        assert!(netns_path_from_info(r#"{"runtimeSpec":{}}"#).is_err());
    }

    #[test]
    fn pod_uids_are_uuid_shaped_and_distinct() {
        let (a, b) = (PodSpec::new("a"), PodSpec::new("a"));
        assert_eq!(a.uid.len(), 36);
        assert_ne!(a.uid, b.uid);
    }
}
