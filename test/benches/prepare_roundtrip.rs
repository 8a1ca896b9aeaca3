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
//!
//! The API server stand-in, the plugin and the kubelet stand-in each run on their own tokio
//! runtime with named threads (`apiserver`, `plugin`, `kubelet`; 2 workers each, as the
//! `netclaim` daemon has), so the CPU time each side spends per call is read from its
//! threads' `/proc/self/task/<tid>/schedstat` and reported apart: the plugin's share is what
//! netclaim costs, the stand-in's share is what a real API server would spend elsewhere.
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

/// CPU time (ns) spent so far by this process's threads whose name starts with `prefix`
/// (`/proc/self/task/*/schedstat`: the first field is time on a CPU, in nanoseconds).
fn cpu_ns(prefix: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread exited
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) {
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// One measured call: wall time and the CPU time the plugin's and the API server's threads
/// spent meanwhile.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    plugin_cpu: Duration,
    apiserver_cpu: Duration,
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

struct Bench {
    kubelet: DraClient,
    claims_api: Api<ResourceClaim>,
    claims: Vec<ClaimRef>,
}

impl Bench {
    async fn measure(&self, scenario: Scenario) -> Sample {
        let (plugin, apiserver) = (cpu_ns("plugin"), cpu_ns("apiserver"));
        let wall = self.run_once(scenario).await;
        Sample {
            wall,
            plugin_cpu: Duration::from_nanos(cpu_ns("plugin") - plugin),
            apiserver_cpu: Duration::from_nanos(cpu_ns("apiserver") - apiserver),
        }
    }

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

fn sorted_by(samples: &[Sample], field: impl Fn(&Sample) -> Duration) -> Vec<Duration> {
    let mut values: Vec<Duration> = samples.iter().map(field).collect();
    values.sort();
    values
}

fn report(samples: &BTreeMap<Scenario, Vec<Sample>>) {
    let walls: BTreeMap<Scenario, Vec<Duration>> = samples
        .iter()
        .map(|(s, v)| (*s, sorted_by(v, |x| x.wall)))
        .collect();
    let p50 = |s: Scenario| percentile(&walls[&s], 0.5);
    let reference = p50(Scenario::Empty);
    println!(
        "{:<42} {:>9} {:>9} {:>9} {:>8} {:>13} {:>13}",
        "scenario", "p50 us", "p90 us", "p99 us", "p50/ref", "plugin CPU us", "apisrv CPU us"
    );
    for scenario in Scenario::ALL {
        let sorted = &walls[&scenario];
        let plugin_cpu = sorted_by(&samples[&scenario], |x| x.plugin_cpu);
        let apiserver_cpu = sorted_by(&samples[&scenario], |x| x.apiserver_cpu);
        println!(
            "{:<42} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {:>13.1} {:>13.1}",
            scenario.label(),
            micros(percentile(sorted, 0.5)),
            micros(percentile(sorted, 0.9)),
            micros(percentile(sorted, 0.99)),
            micros(p50(scenario)) / micros(reference),
            micros(percentile(&plugin_cpu, 0.5)),
            micros(percentile(&apiserver_cpu, 0.5)),
        );
    }
    let full = p50(Scenario::Prepare);
    println!();
    println!(
        "(CPU columns: p50 of the CPU time the plugin's / the API server stand-in's threads spent during one call)"
    );
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
    // Three runtimes, so each side's CPU time can be told apart by thread name. Each is
    // entered only from this thread (block_on) or by its own workers.
    let apiserver_runtime = runtime("apiserver");
    let plugin_runtime = runtime("plugin");
    let kubelet_runtime = runtime("kubelet");
    let api = apiserver_runtime.block_on(ApiServer::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("plugins_registry");
    // The plugin's kube client is built inside its runtime: its request buffer task and
    // its connections then run on the plugin's threads, as in the daemon.
    let plugin = plugin_runtime.block_on(async {
        Plugin::builder(DRIVER, NODE)
            .kube_client(api.client())
            .registrar_dir(registry.clone())
            .plugin_data_dir(dir.path().join("plugins").join(DRIVER))
            .start(Arc::new(NoOpDriver))
            .await
            .unwrap()
    });
    kubelet_runtime.block_on(async {
        let claims_api: Api<ResourceClaim> = Api::namespaced(api.client(), NAMESPACE);
        let claims = create_allocated_claims(&claims_api).await;
        let kubelet = KubeletStandIn::new(registry.clone())
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
        let mut samples: BTreeMap<Scenario, Vec<Sample>> = BTreeMap::new();
        for round in 0..rounds {
            for k in 0..count {
                let scenario = Scenario::ALL[(round + k) % count];
                let sample = bench.measure(scenario).await;
                samples.entry(scenario).or_default().push(sample);
            }
        }
        println!(
            "NodePrepareResources round trip, {CLAIMS} claims, {rounds} rounds after \
             {WARMUP_ROUNDS} warm-up rounds (one of each scenario per round, rotating order), \
             unix socket + API server stand-in on 127.0.0.1; API server, plugin and kubelet \
             each on their own 2-worker runtime"
        );
        report(&samples);
    });
    plugin_runtime.block_on(plugin.shutdown()).unwrap();
    apiserver_runtime.block_on(api.shutdown());
}
