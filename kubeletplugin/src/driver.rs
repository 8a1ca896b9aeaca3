//! The contract between this library and a DRA driver.

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::api::resource::v1::ResourceClaim;

/// Identifies a ResourceClaim as the kubelet names it in a DRA call.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimRef {
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's name.
    pub name: String,
    /// The claim's UID; the key of every per-claim result.
    pub uid: String,
}

/// One device prepared for a claim, as reported back to the kubelet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreparedDevice {
    /// The claim's request names this device satisfies.
    pub requests: Vec<String>,
    /// The pool the device was allocated from.
    pub pool_name: String,
    /// The device's name within its pool.
    pub device_name: String,
    /// CDI device ids for the container runtime (network drivers usually have none).
    pub cdi_device_ids: Vec<String>,
    /// The share id when the device was allocated as one share of a shareable device.
    /// Sent to v1 kubelets only (v1beta1 has no such field).
    pub share_id: Option<String>,
}

/// A per-claim failure: reported to the kubelet in the claim's `error` field, never as an
/// RPC error, so the other claims of the batch are unaffected and the kubelet retries it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ClaimError(pub String);

impl ClaimError {
    /// A claim error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The outcome of preparing one claim.
pub type PrepareResult = Result<Vec<PreparedDevice>, ClaimError>;

/// What a DRA driver implements. The library calls it with one batch of claims per kubelet
/// call; calls are serialized by default, so an implementation need not guard against
/// concurrent prepare and unprepare.
///
/// # Guarantees (from the library)
/// - `prepare` receives claims fetched from the API server, already checked to be allocated
///   and to carry the UID the kubelet named. Claims that failed those checks never reach
///   the driver; they get a [`ClaimError`] in the response.
/// - Every claim of the kubelet's request gets an entry in the response: a claim missing
///   from the driver's map is reported as an error.
///
/// # Assumptions (on the driver)
/// - Both calls are idempotent: the kubelet retries after errors and after restarts.
/// - `unprepare` succeeds for claims that no longer exist in the API server.
pub trait DraDriver: Send + Sync + 'static {
    /// Prepares the claims; returns a result for each, keyed by claim UID.
    fn prepare(
        &self,
        claims: Vec<ResourceClaim>,
    ) -> impl Future<Output = BTreeMap<String, PrepareResult>> + Send;

    /// Releases what [`DraDriver::prepare`] set up; returns a result for each claim, keyed by
    /// claim UID.
    fn unprepare(
        &self,
        claims: Vec<ClaimRef>,
    ) -> impl Future<Output = BTreeMap<String, Result<(), ClaimError>>> + Send;
}
