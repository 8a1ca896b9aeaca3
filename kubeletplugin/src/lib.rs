//! A reusable library for Kubernetes Dynamic Resource Allocation (DRA) kubelet plugins:
//! the Rust counterpart of Go's `k8s.io/dynamic-resource-allocation/kubeletplugin`.
//!
//! It knows nothing about any particular kind of device. A driver implements
//! [`DraDriver`]; the library serves plugin registration and the kubelet's `DRAPlugin`
//! service (v1 and v1beta1) on unix sockets, fetches claims from the API server, and
//! publishes the driver's devices as `resource.k8s.io/v1` ResourceSlices.

mod driver;
pub mod proto;

pub use driver::{ClaimError, ClaimRef, DraDriver, PrepareResult, PreparedDevice};
pub mod publisher;

pub use publisher::{DriverResources, Pool, PublishStatus, PublisherConfig, ResourceSlicePublisher};
