//! A reusable library for Kubernetes Dynamic Resource Allocation (DRA) kubelet plugins:
//! the Rust counterpart of Go's `k8s.io/dynamic-resource-allocation/kubeletplugin`.
//!
//! It knows nothing about any particular kind of device. A driver implements
//! [`DraDriver`]; the library serves plugin registration and the kubelet's `DRAPlugin`
//! service (v1 and v1beta1) on unix sockets, optionally streams device health
//! (`DRAResourceHealth` v1 and v1alpha1, [`HealthReporter`]), fetches claims from the API
//! server, and publishes the driver's devices as `resource.k8s.io/v1` ResourceSlices.
//!
//! # What the library guarantees
//! - Every claim in a `NodePrepareResources` call gets an answer; per-claim failures (claim
//!   gone, re-created with another UID, not allocated, refused by the driver) go in that
//!   claim's `error` field and never fail the other claims of the batch.
//! - Claims of one call are fetched concurrently and reach the driver in one call.
//! - Driver calls are serialized unless [`PluginBuilder::serialize`] turns that off.
//! - Sockets are 0660 in directories created 0750, appear only once ready, and are removed
//!   at start (stale ones) and on [`PluginHandle::shutdown`].
//!
//! # Example
//!
//! A driver that prepares every claim with no devices, served on sockets in a temporary
//! directory (in a real deployment, leave the directories at their defaults):
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//!
//! use k8s_openapi::api::resource::v1::ResourceClaim;
//! use kubeletplugin::{ClaimError, ClaimRef, DraDriver, Plugin, PrepareResult};
//!
//! struct NoOp;
//!
//! impl DraDriver for NoOp {
//!     async fn prepare(&self, claims: Vec<ResourceClaim>) -> BTreeMap<String, PrepareResult> {
//!         claims
//!             .into_iter()
//!             .filter_map(|claim| claim.metadata.uid)
//!             .map(|uid| (uid, Ok(Vec::new())))
//!             .collect()
//!     }
//!
//!     async fn unprepare(&self, claims: Vec<ClaimRef>) -> BTreeMap<String, Result<(), ClaimError>> {
//!         claims.into_iter().map(|claim| (claim.uid, Ok(()))).collect()
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! // Any client works for starting; this one points at an API server that is not there.
//! let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse()?))?;
//! let plugin = Plugin::builder("example.dev", "node-1")
//!     .kube_client(client)
//!     .registrar_dir(dir.path().join("plugins_registry"))
//!     .plugin_data_dir(dir.path().join("plugins/example.dev"))
//!     .start(Arc::new(NoOp))
//!     .await?;
//! assert!(plugin.registration_socket_path().ends_with("example.dev-reg.sock"));
//! assert!(plugin.dra_socket_path().exists());
//! plugin.shutdown().await?;
//! assert!(!dir.path().join("plugins/example.dev/dra.sock").exists());
//! # Ok(())
//! # }
//! ```

mod deferred;
mod dra;
mod driver;
mod error;
mod health;
mod plugin;
pub mod proto;
mod registration;
mod sockets;

pub use deferred::Deferred;
pub use driver::{ClaimError, ClaimRef, DraDriver, PrepareResult, PreparedDevice};
pub use error::Error;
pub use health::{DeviceHealth, HealthReporter, HealthStatus, MAX_HEALTH_MESSAGE_LEN};
pub use plugin::{DEFAULT_PLUGINS_DIR, DEFAULT_REGISTRAR_DIR, Plugin, PluginBuilder, PluginHandle};
pub use registration::{DRA_PLUGIN_TYPE, HEALTH_SERVICES, RegistrationStatus, SUPPORTED_VERSIONS};
pub mod publisher;

pub use publisher::{
    DriverResources, Pool, PublishStatus, PublisherConfig, ResourceSlicePublisher,
};
