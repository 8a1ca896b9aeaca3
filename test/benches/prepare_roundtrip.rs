//! NodePrepareResources round trip: 32 claims over the plugin's unix socket, a no-op
//! driver, claims served by the API server stand-in.
//!
//! Run: `cargo bench -p netclaim-test --bench prepare_roundtrip`
//! (optional argument: iterations per scenario, default 2000).
//!
//! Scenarios run interleaved (one of each per round, in an order that rotates every round,
//! after 200 warm-up rounds), so machine noise hits them alike and
//! the ratios against the same-run reference are stable even when absolute times are not:
//! - `empty call`: NodePrepareResources with no claims over the same socket and connection
//!   (gRPC and HTTP/2 cost only: no fetch, no driver call). The reference.
//! - `unprepare x32`: NodeUnprepareResources of the 32 claims: the gRPC round trip and the
//!   driver call with a 32-claim payload, no API server involved (the "claims pre-fetched"
//!   path: unprepare never fetches).
//! - `fetch x1`: one GET of one claim with the same kube client (per-request cost).
//! - `fetch x32`: the 32 concurrent GETs alone, with the same kube client, no gRPC.
//! - `prepare x32`: the full NodePrepareResources round trip.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kubeletplugin::{ClaimError, ClaimRef, DraDriver, Plugin, PrepareResult, PreparedDevice};
use netclaim_test::apiserver::ApiServer;
use netclaim_test::kubelet::{DraApiVersion, DraClient, KubeletStandIn};

const DRIVER: &str = "bench.netclaim.dev";
const NODE: &str = "node-1";
const NAMESPACE: &str = "default";
const CLAIMS: usize = 32;
const WARMUP_ROUNDS: usize = 200;

/// Prepares every claim with one device, instantly.
struct NoOpDriver;

impl DraDriver for NoOpDriver {
    async fn prepare(&self, claims: Vec<ResourceClaim>) -> BTreeMap<String, PrepareResult> {
        claims
            .into_iter()
            .filter_map(|claim| {
                let name = claim.metadata.name?;
                let device = PreparedDevice {
                    requests: vec!["nic".into()],
                    pool_name: NODE.into(),
                    device_name: name,
                    ..PreparedDevice::default()
                };
                Some((claim.metadata.uid?, Ok(vec![device])))
            })
            .collect()
    }

    async fn unprepare(&self, claims: Vec<ClaimRef>) -> BTreeMap<String, Result<(), ClaimError>> {
        claims
            .into_iter()
            .map(|claim| (claim.uid, Ok(())))
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Empty,
    Unprepare,
    FetchOne,
    Fetch,
    Prepare,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::Empty,
        Scenario::Unprepare,
        Scenario::FetchOne,
        Scenario::Fetch,
        Scenario::Prepare,
    ];

    fn label(self) -> &'static str {
        match self {
            Scenario::Empty => "empty call (reference)",
            Scenario::Unprepare => "unprepare x32 (gRPC + driver, no fetch)",
            Scenario::FetchOne => "fetch x1 (one GET)",
            Scenario::Fetch => "fetch x32 (concurrent GETs only)",
            Scenario::Prepare => "prepare x32 (full round trip)",
        }
    }
}

struct Bench {
    kubelet: DraClient,
    claims_api: Api<ResourceClaim>,
    claims: Vec<ClaimRef>,
}

impl Bench {
    async fn run_once(&self, scenario: Scenario) -> Duration {
        let started = Instant::now();
        match scenario {
            Scenario::Empty => {
                let response = self.kubelet.prepare(DraApiVersion::V1, &[]).await.unwrap();
                assert!(response.is_empty());
            }
            Scenario::Unprepare => {
                let response = self
                    .kubelet
                    .unprepare(DraApiVersion::V1, &self.claims)
                    .await
                    .unwrap();
                assert_eq!(response.len(), CLAIMS);
                for (uid, error) in &response {
                    assert_eq!(error, "", "claim {uid}");
                }
            }
            Scenario::FetchOne => {
                self.claims_api.get(&self.claims[0].name).await.unwrap();
            }
            Scenario::Fetch => {
                let fetched = futures::future::join_all(
                    self.claims
                        .iter()
                        .map(|claim| self.claims_api.get(&claim.name)),
                )
                .await;
                for claim in fetched {
                    claim.unwrap();
                }
            }
            Scenario::Prepare => {
                let response = self
                    .kubelet
                    .prepare(DraApiVersion::V1, &self.claims)
                    .await
                    .unwrap();
                assert_eq!(response.len(), CLAIMS);
                for (uid, claim) in &response {
                    assert_eq!(claim.error, "", "claim {uid}");
                }
            }
        }
        started.elapsed()
    }
}

async fn create_allocated_claims(api: &Api<ResourceClaim>) -> Vec<ClaimRef> {
    let mut refs = Vec::new();
    for i in 0..CLAIMS {
        let name = format!("claim-{i:02}");
        let claim: ResourceClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": { "name": name, "namespace": NAMESPACE },
            "spec": { "devices": { "requests": [
                { "name": "nic", "exactly": { "deviceClassName": "netclaim" } }
            ] } }
        }))
        .unwrap();
        let created = api.create(&PostParams::default(), &claim).await.unwrap();
        let allocation = serde_json::json!({ "status": { "allocation": { "devices": {
            "results": [
                { "request": "nic", "driver": DRIVER, "pool": NODE, "device": format!("eth{i}") }
            ]
        } } } });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&allocation))
            .await
            .unwrap();
        refs.push(ClaimRef {
            namespace: NAMESPACE.into(),
            name,
            uid: created.metadata.uid.unwrap(),
        });
    }
    refs
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn report(samples: &BTreeMap<Scenario, Vec<Duration>>) {
    let p50 = |s: Scenario| percentile(&samples[&s], 0.5);
    let reference = p50(Scenario::Empty);
    println!(
        "{:<42} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "scenario", "p50 us", "p90 us", "p99 us", "mean us", "p50/ref"
    );
    for scenario in Scenario::ALL {
        let sorted = &samples[&scenario];
        let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
        println!(
            "{:<42} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.2}",
            scenario.label(),
            micros(percentile(sorted, 0.5)),
            micros(percentile(sorted, 0.9)),
            micros(percentile(sorted, 0.99)),
            micros(mean),
            micros(p50(scenario)) / micros(reference),
        );
    }
    let full = p50(Scenario::Prepare);
    println!();
    println!(
        "prepare x32 p50 = {:.1} us (target < 1000 us: {})",
        micros(full),
        if full < Duration::from_millis(1) {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "breakdown of the p50: fetch alone {:.0}%, gRPC + driver without fetch {:.0}%",
        100.0 * micros(p50(Scenario::Fetch)) / micros(full),
        100.0 * micros(p50(Scenario::Unprepare)) / micros(full),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; the only argument we read is a bare number.
    let rounds = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse::<usize>().ok())
        .unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let api = ApiServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let claims_api: Api<ResourceClaim> = Api::namespaced(api.client(), NAMESPACE);
        let claims = create_allocated_claims(&claims_api).await;
        let plugin = Plugin::builder(DRIVER, NODE)
            .kube_client(api.client())
            .registrar_dir(dir.path().join("plugins_registry"))
            .plugin_data_dir(dir.path().join("plugins").join(DRIVER))
            .start(Arc::new(NoOpDriver))
            .await
            .unwrap();
        let kubelet = KubeletStandIn::new(dir.path().join("plugins_registry"))
            .wait_for_plugin(DRIVER, Duration::from_secs(10))
            .await
            .unwrap();
        let bench = Bench {
            kubelet,
            claims_api,
            claims,
        };

        // One of each scenario per round, in an order that rotates every round: whichever
        // runs first after the previous round's last pays for its leftovers (connection
        // state, the allocator, the stand-in's work), and rotation spreads that evenly.
        let count = Scenario::ALL.len();
        for round in 0..WARMUP_ROUNDS {
            for k in 0..count {
                bench.run_once(Scenario::ALL[(round + k) % count]).await;
            }
        }
        let mut samples: BTreeMap<Scenario, Vec<Duration>> = BTreeMap::new();
        for round in 0..rounds {
            for k in 0..count {
                let scenario = Scenario::ALL[(round + k) % count];
                let took = bench.run_once(scenario).await;
                samples.entry(scenario).or_default().push(took);
            }
        }
        for sorted in samples.values_mut() {
            sorted.sort();
        }
        println!(
            "NodePrepareResources round trip, {CLAIMS} claims, {rounds} rounds after \
             {WARMUP_ROUNDS} warm-up rounds (one of each scenario per round, rotating order), \
             unix socket + API server stand-in on 127.0.0.1, 2 tokio workers"
        );
        report(&samples);

        plugin.shutdown().await.unwrap();
        api.shutdown().await;
    });
}
