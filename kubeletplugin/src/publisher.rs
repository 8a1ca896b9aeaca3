//! Publishes a driver's devices as this node's `resource.k8s.io/v1` ResourceSlices.
//!
//! CONTRACT (types and method signatures are fixed; bodies are being written).

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::Device;

/// Everything a driver offers on this node, by pool name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DriverResources {
    /// Pools by name. A node-local driver usually has one pool named after the node.
    pub pools: BTreeMap<String, Pool>,
}

/// One resource pool: its devices, split into slices of at most 128 by the publisher.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pool {
    /// The pool's devices, in the order they should be published.
    pub devices: Vec<Device>,
}

/// Where and as whom the publisher writes slices.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// The DRA driver name (`spec.driver`).
    pub driver_name: String,
    /// The node the slices belong to (`spec.nodeName`, and the owner reference).
    pub node_name: String,
    /// The Node object's UID for the owner reference; looked up when `None`.
    pub node_uid: Option<String>,
}

/// The publisher's view of its last attempt, for drivers and tests to observe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishStatus {
    /// How many times the desired resources were fully written.
    pub synced_generation: u64,
    /// The last error (API rejection or transport failure), cleared on success.
    pub last_error: Option<String>,
}

/// Keeps this node's ResourceSlices equal to the latest [`DriverResources`] it was given.
///
/// It runs a background task: [`ResourceSlicePublisher::update`] never blocks and the
/// latest call wins.
pub struct ResourceSlicePublisher {
    _private: (),
}

impl ResourceSlicePublisher {
    /// Starts the publisher's background task.
    pub fn start(_client: kube::Client, _config: PublisherConfig) -> Self {
        todo!("being written")
    }

    /// Sets what should be published; returns at once.
    pub fn update(&self, _resources: DriverResources) {
        todo!("being written")
    }

    /// A receiver that sees every change of [`PublishStatus`].
    pub fn status(&self) -> tokio::sync::watch::Receiver<PublishStatus> {
        todo!("being written")
    }

    /// Stops the task; with `delete_slices`, deletes this node's slices of this driver first.
    pub async fn shutdown(self, _delete_slices: bool) {
        todo!("being written")
    }
}
