//! A driver that is registered with the kubelet before it can serve.
//!
//! A DaemonSet rolling update with `maxSurge: 1` runs the new plugin pod next to the old
//! one, and the kubelet sends new calls to the plugin that registered last. A driver that
//! can only take over its node's state once the old instance let go (a lock, a checkpoint)
//! registers with a [`Deferred`] and [`Deferred::set`]s the real driver when it has taken
//! over: calls arriving in between wait for it rather than fail, so the switch costs the
//! kubelet no failed call. A call that waits longer than the limit fails per claim, and the
//! kubelet retries it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceClaim;
use tokio::sync::watch;

use crate::driver::{ClaimError, ClaimRef, DraDriver, PrepareResult};

/// A [`DraDriver`] whose calls wait until the real driver is set.
pub struct Deferred<D> {
    driver: watch::Sender<Option<Arc<D>>>,
    wait: Duration,
}

impl<D: DraDriver> Deferred<D> {
    /// Not ready yet; calls wait at most `wait` for [`Deferred::set`].
    pub fn new(wait: Duration) -> Self {
        Deferred {
            driver: watch::channel(None).0,
            wait,
        }
    }

    /// The driver is ready: waiting and later calls go to it.
    pub fn set(&self, driver: Arc<D>) {
        self.driver.send_replace(Some(driver));
    }

    async fn ready(&self) -> Result<Arc<D>, ClaimError> {
        let mut driver = self.driver.subscribe();
        match tokio::time::timeout(self.wait, driver.wait_for(Option::is_some)).await {
            Ok(Ok(ready)) => ready.clone().ok_or_else(|| not_ready(self.wait)),
            _ => Err(not_ready(self.wait)),
        }
    }
}

fn not_ready(wait: Duration) -> ClaimError {
    ClaimError::new(format!(
        "the driver is still starting (taking over from its previous instance) after {wait:?}; \
         the kubelet retries"
    ))
}

impl<D: DraDriver> DraDriver for Deferred<D> {
    async fn prepare(&self, claims: Vec<ResourceClaim>) -> BTreeMap<String, PrepareResult> {
        match self.ready().await {
            Ok(driver) => driver.prepare(claims).await,
            Err(error) => claims
                .iter()
                .map(|claim| {
                    (
                        claim.metadata.uid.clone().unwrap_or_default(),
                        Err(error.clone()),
                    )
                })
                .collect(),
        }
    }

    async fn unprepare(&self, claims: Vec<ClaimRef>) -> BTreeMap<String, Result<(), ClaimError>> {
        match self.ready().await {
            Ok(driver) => driver.unprepare(claims).await,
            Err(error) => claims
                .into_iter()
                .map(|claim| (claim.uid, Err(error.clone())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl DraDriver for Echo {
        async fn prepare(&self, claims: Vec<ResourceClaim>) -> BTreeMap<String, PrepareResult> {
            claims
                .into_iter()
                .map(|c| (c.metadata.uid.unwrap_or_default(), Ok(Vec::new())))
                .collect()
        }

        async fn unprepare(
            &self,
            claims: Vec<ClaimRef>,
        ) -> BTreeMap<String, Result<(), ClaimError>> {
            claims.into_iter().map(|c| (c.uid, Ok(()))).collect()
        }
    }

    fn claim(uid: &str) -> ResourceClaim {
        let mut claim = ResourceClaim::default();
        claim.metadata.uid = Some(uid.to_owned());
        claim
    }

    #[tokio::test]
    async fn a_call_waits_for_the_driver_and_then_goes_to_it() {
        let deferred = Arc::new(Deferred::<Echo>::new(Duration::from_secs(30)));
        let call = tokio::spawn({
            let deferred = deferred.clone();
            async move { deferred.prepare(vec![claim("a")]).await }
        });
        deferred.set(Arc::new(Echo));
        let results = call.await.unwrap();
        assert!(matches!(results.get("a"), Some(Ok(devices)) if devices.is_empty()));
    }

    #[tokio::test]
    async fn a_driver_that_never_comes_fails_each_claim_saying_why() {
        // The limit is what is tested: a short one keeps the test short.
        let deferred = Deferred::<Echo>::new(Duration::from_millis(20));
        let results = deferred
            .unprepare(vec![ClaimRef {
                uid: "a".into(),
                namespace: "ns".into(),
                name: "c".into(),
            }])
            .await;
        let Some(Err(error)) = results.get("a") else {
            panic!("{results:?}")
        };
        assert!(error.to_string().contains("still starting"), "{error}");
    }
}
