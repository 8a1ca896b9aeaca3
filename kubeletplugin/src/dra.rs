//! The kubelet's `DRAPlugin` service, v1 and v1beta1, on top of a [`DraDriver`].
//!
//! Both versions share one [`DraCore`], which does the version-independent work: fetching
//! and checking claims, serializing driver calls, and making sure every claim the kubelet
//! named gets an answer. The per-version services only translate messages.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::Api;
use tokio::sync::Mutex;

use crate::driver::{ClaimError, ClaimRef, DraDriver, PrepareResult, PreparedDevice};
use crate::proto::{dra_v1, dra_v1beta1};

/// Version-independent handling of prepare and unprepare calls.
pub(crate) struct DraCore<D> {
    driver: Arc<D>,
    client: kube::Client,
    /// Held around driver calls when the plugin serializes them.
    serialize: Option<Mutex<()>>,
}

impl<D: DraDriver> DraCore<D> {
    pub fn new(driver: Arc<D>, client: kube::Client, serialize: bool) -> Self {
        Self {
            driver,
            client,
            serialize: serialize.then(|| Mutex::new(())),
        }
    }

    /// Fetches and checks every claim (concurrently, outside the driver lock), hands the
    /// good ones to the driver in one call, and answers for every claim named.
    pub async fn prepare(&self, requested: Vec<ClaimRef>) -> BTreeMap<String, PrepareResult> {
        let requested = dedup_by_uid(requested);
        let fetched =
            futures::future::join_all(requested.iter().map(|claim| self.fetch(claim))).await;

        let mut results = BTreeMap::new();
        let mut ready = Vec::new();
        let mut ready_refs = Vec::new();
        for (claim_ref, outcome) in requested.into_iter().zip(fetched) {
            match outcome {
                Ok(claim) => {
                    ready.push(claim);
                    ready_refs.push(claim_ref);
                }
                Err(error) => {
                    results.insert(claim_ref.uid, Err(error));
                }
            }
        }
        if ready.is_empty() {
            return results;
        }

        let mut prepared = {
            let _serialized = self.lock().await;
            self.driver.prepare(ready).await
        };
        for claim_ref in ready_refs {
            let outcome = prepared
                .remove(&claim_ref.uid)
                .unwrap_or_else(|| Err(missing_from_driver(&claim_ref, "prepare")));
            results.insert(claim_ref.uid, outcome);
        }
        warn_about_extra_results(prepared.keys(), "prepare");
        results
    }

    /// Passes the claims straight to the driver: they may already be gone from the API
    /// server, and the driver needs only their identity to release them.
    pub async fn unprepare(
        &self,
        requested: Vec<ClaimRef>,
    ) -> BTreeMap<String, Result<(), ClaimError>> {
        let requested = dedup_by_uid(requested);
        if requested.is_empty() {
            return BTreeMap::new();
        }
        let mut released = {
            let _serialized = self.lock().await;
            self.driver.unprepare(requested.clone()).await
        };
        let mut results = BTreeMap::new();
        for claim_ref in requested {
            let outcome = released
                .remove(&claim_ref.uid)
                .unwrap_or_else(|| Err(missing_from_driver(&claim_ref, "unprepare")));
            results.insert(claim_ref.uid, outcome);
        }
        warn_about_extra_results(released.keys(), "unprepare");
        results
    }

    async fn lock(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.serialize {
            Some(mutex) => Some(mutex.lock().await),
            None => None,
        }
    }

    /// GETs the claim and checks that it is the one the kubelet means and that it is
    /// allocated.
    async fn fetch(&self, claim_ref: &ClaimRef) -> Result<ResourceClaim, ClaimError> {
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), &claim_ref.namespace);
        let claim = api
            .get_opt(&claim_ref.name)
            .await
            .map_err(|e| claim_error(claim_ref, format!("fetching it from the API server: {e}")))?;
        check_claim(claim_ref, claim)
    }
}

/// Checks a fetched claim against what the kubelet asked for.
fn check_claim(
    claim_ref: &ClaimRef,
    claim: Option<ResourceClaim>,
) -> Result<ResourceClaim, ClaimError> {
    let Some(claim) = claim else {
        return Err(claim_error(claim_ref, "not found in the API server"));
    };
    let uid = claim.metadata.uid.as_deref().unwrap_or_default();
    if uid != claim_ref.uid {
        return Err(claim_error(
            claim_ref,
            format!(
                "the API server's claim of that name has UID {uid:?}: the claim was deleted \
                 and re-created"
            ),
        ));
    }
    let allocated = claim
        .status
        .as_ref()
        .is_some_and(|status| status.allocation.is_some());
    if !allocated {
        return Err(claim_error(
            claim_ref,
            "not allocated (status.allocation is unset)",
        ));
    }
    Ok(claim)
}

fn claim_error(claim_ref: &ClaimRef, problem: impl std::fmt::Display) -> ClaimError {
    ClaimError::new(format!(
        "ResourceClaim {}/{} (UID {}): {problem}",
        claim_ref.namespace, claim_ref.name, claim_ref.uid
    ))
}

fn missing_from_driver(claim_ref: &ClaimRef, call: &str) -> ClaimError {
    claim_error(claim_ref, format!("the driver returned no {call} result"))
}

fn warn_about_extra_results<'a>(uids: impl Iterator<Item = &'a String>, call: &str) {
    for uid in uids {
        tracing::warn!(%uid, call, "driver returned a result for a claim it was not given");
    }
}

/// Keeps the first of several claims with the same UID: the response is keyed by UID.
fn dedup_by_uid(claims: Vec<ClaimRef>) -> Vec<ClaimRef> {
    let mut seen = BTreeSet::new();
    claims
        .into_iter()
        .filter(|claim| seen.insert(claim.uid.clone()))
        .collect()
}

fn log_claim_errors<T>(call: &str, results: &BTreeMap<String, Result<T, ClaimError>>) {
    for (uid, result) in results {
        if let Err(error) = result {
            tracing::warn!(%uid, call, %error, "claim failed");
        }
    }
}

/// `k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin`.
pub(crate) struct DraV1<D>(pub Arc<DraCore<D>>);

/// `k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin`: like v1 without share ids.
pub(crate) struct DraV1beta1<D>(pub Arc<DraCore<D>>);

fn v1_device(device: PreparedDevice) -> dra_v1::Device {
    dra_v1::Device {
        request_names: device.requests,
        pool_name: device.pool_name,
        device_name: device.device_name,
        cdi_device_ids: device.cdi_device_ids,
        share_id: device.share_id,
    }
}

fn v1beta1_device(device: PreparedDevice) -> dra_v1beta1::Device {
    dra_v1beta1::Device {
        request_names: device.requests,
        pool_name: device.pool_name,
        device_name: device.device_name,
        cdi_device_ids: device.cdi_device_ids,
    }
}

/// Splits a per-claim result into the wire's (devices, error) pair.
fn devices_and_error<T>(
    result: PrepareResult,
    convert: impl Fn(PreparedDevice) -> T,
) -> (Vec<T>, String) {
    match result {
        Ok(devices) => (devices.into_iter().map(convert).collect(), String::new()),
        Err(error) => (Vec::new(), error.to_string()),
    }
}

fn error_text(result: Result<(), ClaimError>) -> String {
    result.err().map(|e| e.to_string()).unwrap_or_default()
}

macro_rules! claim_refs {
    ($claims:expr) => {
        $claims
            .into_iter()
            .map(|c| ClaimRef {
                namespace: c.namespace,
                name: c.name,
                uid: c.uid,
            })
            .collect::<Vec<_>>()
    };
}

#[tonic::async_trait]
impl<D: DraDriver> dra_v1::dra_plugin_server::DraPlugin for DraV1<D> {
    async fn node_prepare_resources(
        &self,
        request: tonic::Request<dra_v1::NodePrepareResourcesRequest>,
    ) -> Result<tonic::Response<dra_v1::NodePrepareResourcesResponse>, tonic::Status> {
        let results = self
            .0
            .prepare(claim_refs!(request.into_inner().claims))
            .await;
        log_claim_errors("NodePrepareResources", &results);
        let claims = results
            .into_iter()
            .map(|(uid, result)| {
                let (devices, error) = devices_and_error(result, v1_device);
                (uid, dra_v1::NodePrepareResourceResponse { devices, error })
            })
            .collect();
        Ok(tonic::Response::new(dra_v1::NodePrepareResourcesResponse {
            claims,
        }))
    }

    async fn node_unprepare_resources(
        &self,
        request: tonic::Request<dra_v1::NodeUnprepareResourcesRequest>,
    ) -> Result<tonic::Response<dra_v1::NodeUnprepareResourcesResponse>, tonic::Status> {
        let results = self
            .0
            .unprepare(claim_refs!(request.into_inner().claims))
            .await;
        log_claim_errors("NodeUnprepareResources", &results);
        let claims = results
            .into_iter()
            .map(|(uid, result)| {
                let error = error_text(result);
                (uid, dra_v1::NodeUnprepareResourceResponse { error })
            })
            .collect();
        Ok(tonic::Response::new(
            dra_v1::NodeUnprepareResourcesResponse { claims },
        ))
    }
}

#[tonic::async_trait]
impl<D: DraDriver> dra_v1beta1::dra_plugin_server::DraPlugin for DraV1beta1<D> {
    async fn node_prepare_resources(
        &self,
        request: tonic::Request<dra_v1beta1::NodePrepareResourcesRequest>,
    ) -> Result<tonic::Response<dra_v1beta1::NodePrepareResourcesResponse>, tonic::Status> {
        let results = self
            .0
            .prepare(claim_refs!(request.into_inner().claims))
            .await;
        log_claim_errors("NodePrepareResources", &results);
        let claims = results
            .into_iter()
            .map(|(uid, result)| {
                let (devices, error) = devices_and_error(result, v1beta1_device);
                (
                    uid,
                    dra_v1beta1::NodePrepareResourceResponse { devices, error },
                )
            })
            .collect();
        Ok(tonic::Response::new(
            dra_v1beta1::NodePrepareResourcesResponse { claims },
        ))
    }

    async fn node_unprepare_resources(
        &self,
        request: tonic::Request<dra_v1beta1::NodeUnprepareResourcesRequest>,
    ) -> Result<tonic::Response<dra_v1beta1::NodeUnprepareResourcesResponse>, tonic::Status> {
        let results = self
            .0
            .unprepare(claim_refs!(request.into_inner().claims))
            .await;
        log_claim_errors("NodeUnprepareResources", &results);
        let claims = results
            .into_iter()
            .map(|(uid, result)| {
                let error = error_text(result);
                (uid, dra_v1beta1::NodeUnprepareResourceResponse { error })
            })
            .collect();
        Ok(tonic::Response::new(
            dra_v1beta1::NodeUnprepareResourcesResponse { claims },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::resource::v1::{AllocationResult, ResourceClaimStatus};
    use kube::api::ObjectMeta;

    fn claim_ref() -> ClaimRef {
        ClaimRef {
            namespace: "ns".into(),
            name: "c".into(),
            uid: "u1".into(),
        }
    }

    fn claim(uid: &str, allocated: bool) -> ResourceClaim {
        ResourceClaim {
            metadata: ObjectMeta {
                name: Some("c".into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            status: allocated.then(|| ResourceClaimStatus {
                allocation: Some(AllocationResult::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_allocated_claim_with_matching_uid() {
        let checked = check_claim(&claim_ref(), Some(claim("u1", true))).unwrap();
        assert_eq!(checked, claim("u1", true));
    }

    #[test]
    fn refuses_missing_mismatched_and_unallocated_claims() {
        let missing = check_claim(&claim_ref(), None).unwrap_err();
        assert!(missing.0.contains("ns/c") && missing.0.contains("not found"));
        let mismatch = check_claim(&claim_ref(), Some(claim("u2", true))).unwrap_err();
        assert!(mismatch.0.contains("\"u2\""), "{mismatch}");
        let unallocated = check_claim(&claim_ref(), Some(claim("u1", false))).unwrap_err();
        assert!(unallocated.0.contains("status.allocation"), "{unallocated}");
    }

    /// A driver whose `unprepare` records how many calls are inside it and stays inside
    /// until the test releases it.
    struct HeldDriver {
        inside: std::sync::atomic::AtomicUsize,
        most_inside: std::sync::atomic::AtomicUsize,
        release: tokio::sync::Semaphore,
    }

    impl HeldDriver {
        fn new() -> Self {
            Self {
                inside: 0.into(),
                most_inside: 0.into(),
                release: tokio::sync::Semaphore::new(0),
            }
        }

        fn inside(&self) -> usize {
            self.inside.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl DraDriver for HeldDriver {
        async fn prepare(&self, _: Vec<ResourceClaim>) -> BTreeMap<String, PrepareResult> {
            unreachable!("these tests only unprepare")
        }

        async fn unprepare(
            &self,
            claims: Vec<ClaimRef>,
        ) -> BTreeMap<String, Result<(), ClaimError>> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.inside.fetch_add(1, SeqCst) + 1;
            self.most_inside.fetch_max(now, SeqCst);
            self.release.acquire().await.unwrap().forget();
            self.inside.fetch_sub(1, SeqCst);
            claims.into_iter().map(|c| (c.uid, Ok(()))).collect()
        }
    }

    /// A client for a core whose calls never reach the API server (unprepare does not).
    fn offline_client() -> kube::Client {
        let service = tower::service_fn(
            |_: tonic::codegen::http::Request<kube::client::Body>| async {
                Err::<tonic::codegen::http::Response<kube::client::Body>, _>(std::io::Error::other(
                    "no API server in this test",
                ))
            },
        );
        kube::Client::new(service, "default")
    }

    fn claim_named(name: &str) -> ClaimRef {
        ClaimRef {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    /// Two unprepare calls polled by hand: a poll runs a call as far as it can go, so after
    /// one poll the second call is either inside the driver or waiting for the first. No
    /// timing is involved.
    async fn second_call_enters_while_the_first_is_inside(serialize: bool) -> bool {
        let driver = Arc::new(HeldDriver::new());
        let core = DraCore::new(driver.clone(), offline_client(), serialize);
        let mut first = std::pin::pin!(core.unprepare(vec![claim_named("a")]));
        let mut second = std::pin::pin!(core.unprepare(vec![claim_named("b")]));
        assert!(futures::poll!(first.as_mut()).is_pending());
        assert_eq!(driver.inside(), 1, "the first call is inside the driver");
        assert!(futures::poll!(second.as_mut()).is_pending());
        let overlapped = driver.inside() == 2;

        // Both finish once released, whatever the mode.
        driver.release.add_permits(2);
        let (a, b) = futures::join!(first, second);
        assert_eq!(a, BTreeMap::from([("uid-a".to_string(), Ok(()))]));
        assert_eq!(b, BTreeMap::from([("uid-b".to_string(), Ok(()))]));
        assert_eq!(driver.inside(), 0);
        let most = driver.most_inside.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(most, if overlapped { 2 } else { 1 });
        overlapped
    }

    #[tokio::test]
    async fn serialized_calls_wait_outside_the_driver() {
        assert!(!second_call_enters_while_the_first_is_inside(true).await);
    }

    #[tokio::test]
    async fn unserialized_calls_overlap_in_the_driver() {
        // The counterpart: the same observation does see an overlap when one is allowed.
        assert!(second_call_enters_while_the_first_is_inside(false).await);
    }

    #[test]
    fn dedup_keeps_first_of_each_uid() {
        let mut second = claim_ref();
        second.name = "other".into();
        let kept = dedup_by_uid(vec![claim_ref(), second]);
        assert_eq!(kept, vec![claim_ref()]);
    }
}
