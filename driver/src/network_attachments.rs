//! CNI mode: reading the Multus `NetworkAttachmentDefinition`s (`k8s.cni.cncf.io/v1`) that
//! claims reference in `cni.networkAttachmentDefinition`.
//!
//! Prepare resolves a reference once, through [`NetworkAttachments`], into a checked
//! [`CniNetworkList`] ([`resolve`]) and stores the list in the checkpoint; the NRI hooks
//! run the stored list and never read the API. So a NAD edited or deleted later does not
//! change a prepared claim or a running pod: the next claim picks the change up.
//!
//! # Assumptions
//! - The driver's service account may `get` `network-attachment-definitions` in the
//!   claims' namespaces (`examples/install/rbac.yaml`). A claim names a NAD of its own
//!   namespace, or of one its DeviceClass lists (`cni.claimMayBring`, checked in
//!   [`crate::prepare`] before the read); a NAD's `spec.config` is at most 10 KiB and 8
//!   plugins, and what the claim's side wrote is checked as the claim's
//!   ([`netclaim_api::policy`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use netclaim_api::CniNetworkList;
use netclaim_api::cni::{NAD_GROUP, NAD_KIND, NAD_PLURAL, NAD_VERSION};
use serde_json::Value;

/// How long prepare waits for the API server to answer one NAD lookup: well within the
/// kubelet's deadline for a prepare call, so the claim fails with a reason instead.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a `NetworkAttachmentDefinition` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The API has no such object.
    #[error("not found")]
    NotFound,
    /// The API refused the read (403).
    #[error(
        "forbidden: {0} (check the RBAC of netclaim's service account: it needs get on \
         network-attachment-definitions.k8s.cni.cncf.io, see examples/install/rbac.yaml)"
    )]
    Forbidden(String),
    /// Any other API or transport failure; a retry may succeed.
    #[error("reading it from the API failed: {0}")]
    Api(String),
    /// The driver was built without an API client to read NADs with.
    #[error(
        "NetworkAttachmentDefinitions cannot be read: this driver has no Kubernetes API client"
    )]
    NotConfigured,
}

/// Reads `NetworkAttachmentDefinition`s. [`kube::Client`] implements it; tests use fakes.
pub trait NetworkAttachments: Send + Sync + 'static {
    /// The object `namespace/name` as JSON; what prepare reads is its `spec.config`.
    ///
    /// # Errors
    /// A [`LookupError`] saying why it could not be read.
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Value, LookupError>> + Send;
}

impl<T: NetworkAttachments> NetworkAttachments for Arc<T> {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Value, LookupError>> + Send {
        (**self).get(namespace, name)
    }
}

/// No API access: every lookup fails with [`LookupError::NotConfigured`]. The default of
/// [`crate::prepare::NetclaimDriver`], so drivers without an API client refuse NAD
/// references clearly rather than not building.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNetworkAttachments;

impl NetworkAttachments for NoNetworkAttachments {
    async fn get(&self, _namespace: &str, _name: &str) -> Result<Value, LookupError> {
        Err(LookupError::NotConfigured)
    }
}

impl NetworkAttachments for kube::Client {
    async fn get(&self, namespace: &str, name: &str) -> Result<Value, LookupError> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(NAD_GROUP, NAD_VERSION, NAD_KIND),
            NAD_PLURAL,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.clone(), namespace, &resource);
        match tokio::time::timeout(LOOKUP_TIMEOUT, api.get(name)).await {
            Ok(Ok(object)) => Ok(object.data),
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => Err(LookupError::NotFound),
            Ok(Err(kube::Error::Api(status))) if status.code == 403 => {
                Err(LookupError::Forbidden(status.message))
            }
            Ok(Err(error)) => Err(LookupError::Api(error.to_string())),
            Err(_) => Err(LookupError::Api(format!(
                "no answer within {}s",
                LOOKUP_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Why a reference did not resolve to a network.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The object could not be read.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Its `spec.config` is not a network netclaim runs (paths start at `spec.config`).
    #[error(transparent)]
    Config(#[from] netclaim_api::ConfigError),
}

/// The network of NAD `namespace/name`: read through `attachments`, its `spec.config`
/// checked with the rules of inline networks
/// ([`CniNetworkList::from_network_attachment_definition`]).
///
/// # Errors
/// [`ResolveError`]: the lookup failed, or the config is not acceptable.
pub async fn resolve(
    attachments: &impl NetworkAttachments,
    namespace: &str,
    name: &str,
) -> Result<CniNetworkList, ResolveError> {
    let object = attachments.get(namespace, name).await?;
    Ok(CniNetworkList::from_network_attachment_definition(&object)?)
}
