//! Pod start on a busy node, on a real containerd (issue 10's benchmark).
//!
//! containerd hands NRI events to plugins one at a time, so every millisecond a hook spends
//! is paid by every pod queued behind it. Each round starts 20 sandboxes at once through
//! CRI, 10 whose pod has a prepared claim for a moved NIC (a veth with an address) and 10
//! without claims, in two scenarios run in rotating order:
//!
//! - **without**: netclaim's daemon stopped (containerd runs with NRI and no plugin);
//! - **with**: netclaim connected, the 10 claims prepared.
//!
//! Reported per round and as medians: the wall time of the 20 RunPodSandbox calls in each
//! scenario, netclaim's own time inside each hook (from its `NRI hook answered` debug log
//! lines, measured from the decoded request to the answer), split into pods with and
//! without claims. Targets: a hook for a pod without claims costs < 0.1 ms at p99 inside
//! netclaim; the 20-sandbox wall time with netclaim is within 1.1x of (without netclaim +
//! the 10 attaches done one after another, i.e. the sum of the with-claims RUN hooks).
//!
//! Run (as root, containerd installed by `hack/install-deps.sh`):
//! `cargo bench -p netclaim-test --bench pod_start -- [rounds]` (default 5 rounds;
//! `NETCLAIM_CONTAINERD_MAJOR=2` for containerd 2.x). The machine should be otherwise idle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::future::join_all;
use netclaim_test::containerd::PodSpec;
use netclaim_test::node::checks::{config, nic};
use netclaim_test::node::{NodeOptions, RuntimeKind, TestNode};
use serde_json::json;

const WITH_CLAIMS: usize = 10;
const WITHOUT_CLAIMS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Without,
    With,
}

/// One scenario of one round.
#[derive(Debug, Default)]
struct Sample {
    wall: Duration,
    /// netclaim's RUN hook times for pods with claims (with netclaim only).
    claimed_hooks: Vec<Duration>,
    /// netclaim's RUN/STOP/REMOVE hook times for pods without claims (with netclaim only).
    unclaimed_hooks: Vec<Duration>,
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    netclaim_test::node::prefer_release_binary();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(rounds))
}

async fn run(rounds: usize) -> Result<()> {
    let mut node = TestNode::start(NodeOptions {
        runtime: RuntimeKind::Containerd,
        nics: WITH_CLAIMS,
        ..NodeOptions::default()
    })
    .await
    .context("a containerd node (hack/install-deps.sh installs containerd)")?;
    let version = node
        .containerd()
        .map(|c| c.version().to_owned())
        .unwrap_or_default();
    println!(
        "pod_start: {rounds} rounds of {} sandboxes at once ({WITH_CLAIMS} with a moved-NIC claim, \
         {WITHOUT_CLAIMS} without), containerd {version}; scenarios in rotating order",
        WITH_CLAIMS + WITHOUT_CLAIMS
    );
    let mut without = Vec::new();
    let mut with = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Scenario::Without, Scenario::With]
        } else {
            [Scenario::With, Scenario::Without]
        };
        for scenario in order {
            let sample = one_round(&mut node, round, scenario).await?;
            println!(
                "  round {round} {scenario:?}: wall {:.1} ms{}",
                ms(sample.wall),
                if scenario == Scenario::With {
                    format!(
                        ", claimed RUN hooks sum {:.1} ms, unclaimed hooks max {:.3} ms",
                        ms(sample.claimed_hooks.iter().sum()),
                        ms(sample
                            .unclaimed_hooks
                            .iter()
                            .max()
                            .copied()
                            .unwrap_or_default())
                    )
                } else {
                    String::new()
                }
            );
            match scenario {
                Scenario::Without => without.push(sample),
                Scenario::With => with.push(sample),
            }
        }
    }
    report(&without, &with)
}

async fn one_round(node: &mut TestNode, round: usize, scenario: Scenario) -> Result<Sample> {
    let mut claims = Vec::new();
    let mut specs = Vec::new();
    for i in 0..WITH_CLAIMS + WITHOUT_CLAIMS {
        let spec = PodSpec::new(&format!("p{round}-{i}"));
        if i < WITH_CLAIMS && scenario == Scenario::With {
            let cfg = config(json!({
                "name": "net1",
                "addresses": [format!("192.0.2.{}/24", 10 + i)],
            }));
            let claim = node
                .allocate(
                    &[nic(
                        &format!("c{round}-{i}"),
                        &format!("eth{}", i + 1),
                        Some(cfg),
                    )],
                    &spec.name,
                    &spec.uid,
                )
                .await?;
            claims.push(claim);
        }
        specs.push(spec);
    }
    match scenario {
        Scenario::With => {
            let prepared = node.prepare(&claims).await?;
            for (uid, outcome) in &prepared {
                ensure!(outcome.error.is_empty(), "prepare {uid}: {}", outcome.error);
            }
        }
        Scenario::Without => node.stop_driver()?,
    }
    let log_before = node.driver_log().len();
    let containerd = node.containerd().context("not a containerd node")?;
    let started = Instant::now();
    let runs = join_all(specs.iter().map(|spec| async move {
        let mut cri = containerd.cri().await?;
        cri.run_pod(spec).await
    }))
    .await;
    let wall = started.elapsed();
    let mut sandboxes = Vec::new();
    for (spec, run) in specs.iter().zip(runs) {
        sandboxes.push(run.with_context(|| format!("RunPodSandbox {}", spec.name))?);
    }
    if scenario == Scenario::With {
        for (i, sandbox) in sandboxes.iter().take(WITH_CLAIMS).enumerate() {
            let mut cri = containerd.cri().await?;
            let netns = cri
                .pod_netns_path(sandbox)
                .await?
                .context("a sandbox without netns")?;
            let links = netclaim_test::containerd::run_in_netns(
                &netns,
                "ip",
                &["-o", "link", "show", "net1"],
            )
            .with_context(|| format!("pod {i} has no net1"))?;
            ensure!(links.contains("net1"), "pod {i} has no net1: {links}");
        }
    }
    let mut cri = containerd.cri().await?;
    for sandbox in &sandboxes {
        cri.stop_pod(sandbox).await?;
        cri.remove_pod(sandbox).await?;
    }
    let log = node.driver_log();
    let mut sample = Sample {
        wall,
        ..Sample::default()
    };
    if scenario == Scenario::With {
        let claimed: Vec<&str> = sandboxes
            .iter()
            .take(WITH_CLAIMS)
            .map(String::as_str)
            .collect();
        for line in log.get(log_before..).unwrap_or_default().lines() {
            let Some((event, pod, elapsed)) = hook_line(line) else {
                continue;
            };
            if claimed.contains(&pod) {
                if event == "RunPodSandbox" {
                    sample.claimed_hooks.push(elapsed);
                }
            } else if sandboxes.iter().any(|s| s == pod) {
                sample.unclaimed_hooks.push(elapsed);
            }
        }
        ensure!(
            sample.claimed_hooks.len() == WITH_CLAIMS,
            "found {} RUN hook lines for claimed pods (is the driver's log at debug?)",
            sample.claimed_hooks.len()
        );
        let unprepared = node.unprepare(&claims).await?;
        for (uid, error) in &unprepared {
            ensure!(error.is_empty(), "unprepare {uid}: {error}");
        }
    } else {
        node.start_driver().await?;
    }
    Ok(sample)
}

/// `(event, sandbox id, elapsed)` of a `NRI hook answered` debug line.
fn hook_line(line: &str) -> Option<(&str, &str, Duration)> {
    if !line.contains("NRI hook answered") {
        return None;
    }
    let field = |name: &str| -> Option<&str> {
        let start = line.find(&format!(" {name}="))? + name.len() + 2;
        let rest = &line[start..];
        Some(rest.split_whitespace().next().unwrap_or(rest))
    };
    let event = field("event")?;
    let pod = field("pod")?;
    let elapsed: u64 = field("elapsed_us")?.parse().ok()?;
    Some((event, pod, Duration::from_micros(elapsed)))
}

fn report(without: &[Sample], with: &[Sample]) -> Result<()> {
    if without.is_empty() || with.is_empty() {
        bail!("no rounds ran");
    }
    let wall_without = median(without.iter().map(|s| s.wall).collect());
    let wall_with = median(with.iter().map(|s| s.wall).collect());
    let serial_attaches = median(
        with.iter()
            .map(|s| s.claimed_hooks.iter().sum::<Duration>())
            .collect(),
    );
    let mut unclaimed: Vec<Duration> = with
        .iter()
        .flat_map(|s| s.unclaimed_hooks.clone())
        .collect();
    unclaimed.sort();
    let p99 = unclaimed
        .get((unclaimed.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default();
    let reference = wall_without + serial_attaches;
    let ratio = wall_with.as_secs_f64() / reference.as_secs_f64();
    println!("pod_start results (medians over {} rounds):", with.len());
    println!(
        "  20 sandboxes without netclaim:         {:.1} ms",
        ms(wall_without)
    );
    println!(
        "  10 attaches one after another (hooks): {:.1} ms",
        ms(serial_attaches)
    );
    println!(
        "  20 sandboxes with netclaim:            {:.1} ms",
        ms(wall_with)
    );
    println!(
        "  ratio with / (without + serial attaches): {ratio:.2} (target <= 1.10) {}",
        if ratio <= 1.10 { "met" } else { "NOT met" }
    );
    println!(
        "  hooks of pods without claims: {} samples, p99 {:.3} ms (target < 0.1 ms) {}",
        unclaimed.len(),
        ms(p99),
        if p99 < Duration::from_micros(100) {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
